"""Humans rank sampled responses: ``lmforge rank`` (web page or terminal) and ``lmforge rank-export``.

Why: preference data is where alignment starts, and the usual route (export samples, rank them in a
spreadsheet or a hosted labelling tool, write a converter) loses judgements and annotators' names on the
way. Here one command samples K candidates per prompt with lmforge's own sampler, serves a page on
127.0.0.1 where a person ranks them (best to worst, ties and skips allowed, keyboard first), and saves each
judgement the moment it is made. The export is the ``{"prompt", "chosen", "rejected"}`` shape that
``load_preferences`` (the reward-model and DPO aligners) reads, so ranked data feeds a pipeline directly.

A session is a directory:

- ``session.json``      what was sampled (model, prompts file, k, sampling settings);
- ``candidates.jsonl``  one line per prompt: its messages and K candidate texts (written once, atomically);
- ``samples/``          the sampler's own artifact (completions.jsonl + manifest);
- ``judgements.jsonl``  append-only events ``{"annotator", "prompt_id", "ranking" | "skipped", "time"}``,
  flushed and fsynced per judgement. The latest event per (annotator, prompt) wins, so a re-ranking is a
  new line, never a rewrite; a torn last line (a kill mid-write) is ignored on reading.

The modules: ``session`` (the directory and its log), ``sampling`` (drawing the candidates), ``server`` (the
page on 127.0.0.1), ``terminal`` (ranking without a browser), ``agreement`` (preference pairs and agreement
between annotators), ``commands`` (the two commands). This module only registers the commands, so that
listing commands imports no torch.
"""

from lmforge import hookimpl


@hookimpl
def lmforge_cli_commands():
    return {
        "rank": ("rank K sampled responses per prompt in a local web page (or --terminal) -> preference data",
                 "lmforge.plugins.rank.commands:rank_main"),
        "rank-export": ("write preference pairs from a ranking session and report annotator agreement",
                        "lmforge.plugins.rank.commands:export_main"),
    }
