"""Human feedback and self-knowledge: ranking sampled responses, and "I don't know" data.

- ``lmforge rank`` / ``lmforge rank-export`` (rank.py): people rank K sampled responses per prompt in a local
  web page or the terminal; the rankings become ``{"prompt", "chosen", "rejected"}`` preference pairs.
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


@hookimpl
def lmforge_cli_commands():
    return {
        "rank": ("rank K sampled responses per prompt in a local web page (or --terminal) -> preference data",
                 "lmforge.plugins.rank:rank_main"),
        "rank-export": ("write preference pairs from a ranking session and report annotator agreement",
                        "lmforge.plugins.rank:export_main"),
    }
