"""The ``lmforge rank`` and ``lmforge rank-export`` commands."""

from __future__ import annotations

import argparse
import json
import os
import sys

from lmforge.plugins.rank.agreement import EXPORT_MODES, agreement, export_preferences
from lmforge.plugins.rank.sampling import open_or_create
from lmforge.plugins.rank.server import RankServer
from lmforge.plugins.rank.session import RankSession, _write_atomic
from lmforge.plugins.rank.terminal import rank_in_terminal


def rank_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge rank", description=(
        "Sample K responses per prompt from a model and rank them (best to worst) in a local web page or "
        "the terminal. Judgements are saved at once; run the same command again to resume."))
    parser.add_argument("model_dir", nargs="?",
                        help="model directory or Hub id (org/name) to sample from (omit to reopen --session)")
    parser.add_argument("--prompts", help="prompts file (.txt one per line, or .jsonl in any prompt format)")
    parser.add_argument("--session", default="runs/rank", help="session directory (default: runs/rank)")
    parser.add_argument("--k", type=int, default=4, help="candidates per prompt (default 4)")
    parser.add_argument("--annotator", default=os.environ.get("USER", "annotator"), help="your name")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--terminal", action="store_true", help="rank in the terminal instead of a web page")
    parser.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--system-prompt", default=None)
    parser.add_argument("--max-prompts", type=int, default=None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args(argv)
    session = open_or_create(args)
    if args.terminal:
        judged = rank_in_terminal(session, args.annotator)
        print(f"lmforge rank: {judged} judged now; session {session.directory}")
        return 0
    server = RankServer(session, args.host, args.port, args.annotator)
    url = f"{server.url}?annotator={args.annotator}"
    print(f"lmforge rank: serving {len(session.prompts)} prompts at {url} (Ctrl-C to stop; judgements are in "
          f"{session.judgements_path})", file=sys.stderr)
    server.serve_until_interrupted(None if args.no_browser else url)
    return 0


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge rank-export", description=(
        "Write the pairwise preferences implied by a ranking session ({prompt, chosen, rejected} jsonl, what "
        "the reward-model and DPO aligners read) and report agreement between annotators."))
    parser.add_argument("--session", default="runs/rank", help="session directory (default: runs/rank)")
    parser.add_argument("--out", default=None, help="output .jsonl (default: <session>/preferences.<mode>.jsonl)")
    parser.add_argument("--mode", default="all_pairs", choices=EXPORT_MODES,
                        help="all_pairs: every pair a ranking implies; best_vs_worst: top group vs bottom group")
    parser.add_argument("--annotators", nargs="*", default=None, help="only these annotators (default: all)")
    args = parser.parse_args(argv)
    session = RankSession(args.session)
    out = args.out or session.directory / f"preferences.{args.mode}.jsonl"
    result = export_preferences(session, out, args.mode, args.annotators)
    report = agreement(session, args.annotators)
    _write_atomic(session.directory / "agreement.json", json.dumps(report, indent=2))
    print(f"lmforge rank-export: {result['pairs']} pairs from {result['prompts']} prompts -> {result['path']} "
          f"({result['conflicts_dropped']} split pairs and {result['identical_dropped']} identical dropped)")
    for name, count in report["annotators"].items():
        print(f"  {name}: {count} ranked")
    for pair in report["pairs"]:
        tau, agree = pair["kendall_tau"], pair["pairwise_agreement"]
        print(f"  {pair['annotators'][0]} vs {pair['annotators'][1]}: {pair['shared_prompts']} shared prompts, "
              f"pairwise agreement {'-' if agree is None else f'{agree:.2f}'}, "
              f"Kendall tau {'-' if tau is None else f'{tau:.2f}'}")
    return 0
