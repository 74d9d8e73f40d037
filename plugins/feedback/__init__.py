"""Human feedback and self-knowledge: ranking sampled responses, and "I don't know" data.

- ``lmforge rank`` / ``lmforge rank-export`` (the ``rank`` package beside this one): people rank K sampled
  responses per prompt in a local web page or the terminal; the rankings become preference pairs.
- ``self_interrogation`` (a ``sampler``-kind stage, self_interrogation.py): probe a model on Q/A data and
  write SFT examples that answer where it knows and say "I'm not sure" where it does not.
- ``judged_pairs`` (a ``sampler``-kind stage, judged_pairs.py): the model answers questions several times, a
  judge that knows the references ranks the answers, and the best and worst become preference pairs.
"""

from lmforge import hookimpl


@hookimpl
def lmforge_register(registry):
    registry.add("sampler", "self_interrogation",
                 "lmforge.plugins.feedback.self_interrogation:SelfInterrogation")
    registry.add("sampler", "question_writer", "lmforge.plugins.feedback.question_writer:QuestionWriter")
    registry.add("sampler", "judged_pairs", "lmforge.plugins.feedback.judged_pairs:JudgedPairs")
