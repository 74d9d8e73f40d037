"""Human feedback and self-knowledge: ranking sampled responses, and "I don't know" data.

- ``lmforge rank`` / ``lmforge rank-export`` (rank.py): people rank K sampled responses per prompt in a local
  web page or the terminal; the rankings become ``{"prompt", "chosen", "rejected"}`` preference pairs.
- ``self_interrogation`` (a ``sampler``-kind stage, self_interrogation.py): probe a model on Q/A data and
  write SFT examples that answer where it knows and say "I'm not sure" where it does not.
"""

from lmforge import hookimpl


@hookimpl
def lmforge_register(registry):
    registry.add("sampler", "self_interrogation",
                 "lmforge.plugins.feedback.self_interrogation:SelfInterrogation")
    registry.add("sampler", "question_writer", "lmforge.plugins.feedback.question_writer:QuestionWriter")


def _rank(argv):
    from .rank import rank_main

    return rank_main(argv)


def _rank_export(argv):
    from .rank import export_main

    return export_main(argv)


@hookimpl
def lmforge_cli_commands():
    return {
        "rank": ("rank K sampled responses per prompt in a local web page (or --terminal) -> preference data",
                 _rank),
        "rank-export": ("write preference pairs from a ranking session and report annotator agreement",
                        _rank_export),
    }
