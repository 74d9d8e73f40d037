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

The server is the standard library's ``ThreadingHTTPServer``: the page needs a handful of JSON endpoints for
one local user, which a framework would not make shorter or safer, and it adds no dependency. It binds
127.0.0.1 unless told otherwise, answers only requests whose Host header is the address it serves (DNS
rebinding) and only JSON POSTs (a cross-site form cannot send one without a CORS preflight, never granted).

Agreement between annotators (Kendall's tau-b and pairwise agreement over the candidate pairs both ranked)
is computed here in a few lines, not with scipy: it is ten lines of counting and scipy would be a 40 MB
dependency for them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from lmforge.errors import ConfigError, DataError, MissingArtifact
from lmforge.plugins.lib.local_page import LocalPageHandler, LocalPageServer

EXPORT_MODES = ("all_pairs", "best_vs_worst")
PAGE = Path(__file__).with_name("rank.html")


# --------------------------------------------------------------------------------------------------- session

def _write_atomic(path: Path, text: str) -> None:
    temp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)


def repair_torn_tail(path: Path) -> int:
    """Cut a last line torn by a kill (no newline at the end) off an append-only log; returns its size.

    A judgement is acknowledged only after its whole line, newline included, is fsynced, so a torn tail was
    never acknowledged: it is moved to ``<log>.torn`` (kept for inspection) and the log ends on a whole
    line again, so the next judgement starts a line of its own instead of being glued to the torn one.
    """
    if not path.is_file():
        return 0
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        block = min(size, 1 << 16)
        while True:  # find the last newline, reading backwards
            handle.seek(size - block)
            chunk = handle.read(block)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = size - block + cut + 1
                break
            if block == size:
                keep = 0
                break
            block = min(size, block * 2)
        handle.seek(keep)
        torn = handle.read()
        with open(path.with_name(path.name + ".torn"), "ab") as aside:
            aside.write(torn + b"\n")
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())
    return len(torn)


def check_ranking(ranking: Any, candidate_ids: list[int], where: str) -> list[list[int]]:
    """A ranking is a list of tie groups, best first, naming every candidate exactly once."""
    if not isinstance(ranking, list) or not ranking:
        raise DataError(f"{where}: ranking must be a non-empty list of groups of candidate ids, best first")
    groups = [group if isinstance(group, list) else [group] for group in ranking]
    seen = [c for group in groups for c in group]
    if any(not isinstance(c, int) or isinstance(c, bool) for c in seen):
        raise DataError(f"{where}: candidate ids must be integers, got {seen}")
    if sorted(seen) != sorted(candidate_ids):
        raise DataError(f"{where}: ranking must name each of the candidates {candidate_ids} exactly once, "
                        f"got {seen}")
    if any(not group for group in groups):
        raise DataError(f"{where}: empty tie group in ranking")
    return groups


class RankSession:
    """A ranking session directory: candidates to rank and the append-only log of judgements."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.candidates_path = self.directory / "candidates.jsonl"
        self.judgements_path = self.directory / "judgements.jsonl"
        self._lock = threading.Lock()
        if not self.candidates_path.is_file():
            raise MissingArtifact(f"{self.directory}: not a ranking session (no candidates.jsonl); start one "
                                  "with `lmforge rank <model_dir> --prompts FILE`")
        self.prompts: list[dict[str, Any]] = []
        with open(self.candidates_path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        self.prompts.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{self.candidates_path}:{number}: invalid JSON line ({exc.msg})") from None
        self.by_id = {p["prompt_id"]: p for p in self.prompts}
        self.repaired = repair_torn_tail(self.judgements_path)  # bytes moved aside, 0 when the log was whole

    # -- creating
    @staticmethod
    def create(directory: str | Path, prompts: list[list[dict]], candidates: list[list[str]],
               meta: dict[str, Any]) -> RankSession:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps({"prompt_id": index, "prompt": prompt,
                             "candidates": [{"id": c, "text": text} for c, text in enumerate(texts)]},
                            ensure_ascii=False) + "\n"
                 for index, (prompt, texts) in enumerate(zip(prompts, candidates))]
        _write_atomic(directory / "session.json", json.dumps(meta, indent=2, ensure_ascii=False))
        _write_atomic(directory / "candidates.jsonl", "".join(lines))
        return RankSession(directory)

    # -- judgements
    def record(self, annotator: str, prompt_id: int, ranking: list | None = None, skipped: bool = False) -> dict:
        """Validate and append one judgement (fsynced before returning)."""
        annotator = str(annotator or "").strip()
        if not annotator:
            raise DataError("annotator: empty; give a name (--annotator NAME)")
        try:
            annotator.encode("utf-8")
        except UnicodeEncodeError:
            raise DataError("annotator: not valid Unicode text (a lone surrogate)") from None
        if not isinstance(prompt_id, int) or isinstance(prompt_id, bool) or prompt_id not in self.by_id:
            raise DataError(f"prompt_id {prompt_id!r}: no such prompt in {self.candidates_path}")
        event: dict[str, Any] = {"annotator": annotator, "prompt_id": prompt_id, "time": time.time()}
        if skipped:
            event["skipped"] = True
        else:
            ids = [c["id"] for c in self.by_id[prompt_id]["candidates"]]
            event["ranking"] = check_ranking(ranking, ids, f"prompt {prompt_id}")
        line = json.dumps(event, ensure_ascii=False) + "\n"
        with self._lock:
            repair_torn_tail(self.judgements_path)  # an earlier write of this process that failed half-way
            self._append(line)
        return event

    def _append(self, line: str) -> None:
        with open(self.judgements_path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def judgements(self) -> dict[str, dict[int, dict]]:
        """The latest judgement of each annotator for each prompt: ``{annotator: {prompt_id: event}}``."""
        latest: dict[str, dict[int, dict]] = {}
        if not self.judgements_path.is_file():
            return latest
        with self._lock:
            lines = self.judgements_path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                if number == len(lines):  # torn by a kill mid-write: that judgement was never acknowledged
                    continue
                raise DataError(f"{self.judgements_path}:{number}: invalid JSON line") from None
            if not isinstance(event, dict) or "annotator" not in event or "prompt_id" not in event:
                raise DataError(f"{self.judgements_path}:{number}: not a judgement (expected annotator, prompt_id)")
            latest.setdefault(event["annotator"], {})[event["prompt_id"]] = event
        return latest

    def rankings(self, annotators: list[str] | None = None) -> dict[str, dict[int, list[list[int]]]]:
        """Non-skipped rankings, per annotator (optionally only the named ones)."""
        out = {}
        for annotator, events in self.judgements().items():
            if annotators and annotator not in annotators:
                continue
            out[annotator] = {pid: e["ranking"] for pid, e in events.items() if not e.get("skipped")}
        return out

    def state(self, annotator: str) -> dict[str, Any]:
        """What the page needs: prompts, candidates, this annotator's judgements, everybody's progress."""
        judged = self.judgements()
        mine = judged.get(annotator, {})
        return {"prompts": self.prompts, "annotator": annotator,
                "judgements": {str(pid): event for pid, event in mine.items()},
                "progress": {name: len(events) for name, events in judged.items()},
                "total": len(self.prompts)}


# --------------------------------------------------------------------------------------------------- analysis

def positions(ranking: list[list[int]]) -> dict[int, int]:
    return {candidate: level for level, group in enumerate(ranking) for candidate in group}


def implied_pairs(ranking: list[list[int]], mode: str = "all_pairs") -> list[tuple[int, int]]:
    """(better, worse) candidate pairs a ranking implies; ties imply none."""
    if mode not in EXPORT_MODES:
        raise ConfigError(f"mode: '{mode}' is not one of {', '.join(EXPORT_MODES)}")
    if mode == "best_vs_worst":
        if len(ranking) < 2:
            return []
        return [(a, b) for a in ranking[0] for b in ranking[-1]]
    return [(a, b) for i, better in enumerate(ranking) for worse in ranking[i + 1:] for a in better for b in worse]


def pair_agreement(first: list[list[int]], second: list[list[int]]) -> tuple[float, float]:
    """Pairwise agreement (share of candidate pairs ordered alike, ties as their own verdict) and Kendall tau-b."""
    pos_a, pos_b = positions(first), positions(second)
    same = concordant = discordant = untied_a = untied_b = total = 0
    for i, j in itertools.combinations(sorted(pos_a), 2):
        sign_a = (pos_a[i] > pos_a[j]) - (pos_a[i] < pos_a[j])
        sign_b = (pos_b[i] > pos_b[j]) - (pos_b[i] < pos_b[j])
        total += 1
        same += sign_a == sign_b
        concordant += sign_a * sign_b > 0
        discordant += sign_a * sign_b < 0
        untied_a += sign_a != 0
        untied_b += sign_b != 0
    tau = (concordant - discordant) / math.sqrt(untied_a * untied_b) if untied_a and untied_b else math.nan
    return (same / total if total else math.nan), tau


def agreement(session: RankSession, annotators: list[str] | None = None) -> dict[str, Any]:
    """Agreement for every pair of annotators over the prompts both ranked (skips left out)."""
    rankings = session.rankings(annotators)
    report: dict[str, Any] = {"annotators": {name: len(r) for name, r in sorted(rankings.items())}, "pairs": []}
    for a, b in itertools.combinations(sorted(rankings), 2):
        shared = sorted(set(rankings[a]) & set(rankings[b]))
        scores = [pair_agreement(rankings[a][pid], rankings[b][pid]) for pid in shared]
        agreements = [s[0] for s in scores if not math.isnan(s[0])]
        taus = [s[1] for s in scores if not math.isnan(s[1])]
        report["pairs"].append({
            "annotators": [a, b], "shared_prompts": len(shared),
            "pairwise_agreement": sum(agreements) / len(agreements) if agreements else None,
            "kendall_tau": sum(taus) / len(taus) if taus else None})
    return report


def export_preferences(session: RankSession, out_path: str | Path, mode: str = "all_pairs",
                       annotators: list[str] | None = None) -> dict[str, Any]:
    """Write pairwise preferences (``load_preferences`` format) and return counts.

    Each annotator's ranking votes for the pairs it implies; a pair is exported once, in the direction with
    more votes (pairs the annotators split evenly on are dropped and counted as ``conflicts``). Pairs of
    identical texts are dropped too (nothing to learn).
    """
    rankings = session.rankings(annotators)
    rows, conflicts, identical = [], 0, 0
    for prompt in session.prompts:
        pid = prompt["prompt_id"]
        votes: dict[tuple[int, int], int] = {}
        voters: dict[tuple[int, int], list[str]] = {}
        for annotator in sorted(rankings):
            if pid not in rankings[annotator]:
                continue
            for better, worse in implied_pairs(rankings[annotator][pid], mode):
                votes[(better, worse)] = votes.get((better, worse), 0) + 1
                voters.setdefault((better, worse), []).append(annotator)
        texts = {c["id"]: c["text"] for c in prompt["candidates"]}
        for (better, worse), count in sorted(votes.items()):
            against = votes.get((worse, better), 0)
            if count < against or (count == against and better > worse):
                continue
            if count == against:
                conflicts += 1
                continue
            if texts[better] == texts[worse]:
                identical += 1
                continue
            rows.append({"prompt": prompt["prompt"], "chosen": texts[better], "rejected": texts[worse],
                         "prompt_id": pid, "chosen_id": better, "rejected_id": worse,
                         "votes": count, "votes_against": against, "annotators": voters[(better, worse)]})
    if not rows:
        raise DataError(f"{session.directory}: no preference pairs to export ({sum(map(len, rankings.values()))} "
                        f"rankings; {identical} pairs of identical texts and {conflicts} split pairs dropped)")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {"path": str(out_path), "pairs": len(rows), "mode": mode, "conflicts_dropped": conflicts,
            "identical_dropped": identical, "prompts": len({r["prompt_id"] for r in rows})}


# --------------------------------------------------------------------------------------------------- sampling

@dataclass
class SamplingSettings:
    """How the K candidate answers of each prompt are drawn for people to rank (``lmforge rank --k …``)."""

    k: int = 4  # candidates per prompt: every pair of them can become a preference pair
    max_new_tokens: int = 128
    temperature: float = 1.0  # the model's own distribution: candidates differ enough to be worth ranking
    top_p: float = 0.95  # but no tail tokens that make every candidate obviously broken
    seed: int = 0  # the same candidates when a session is restarted
    system_prompt: str | None = None
    max_prompts: int | None = None


def sample_candidates(model_dir, prompts_file: Path, session_dir: Path, settings: SamplingSettings,
                      device: str = "auto") -> RankSession:
    """Draw K candidates per prompt with the ``hf_generate`` sampler stage and start a session."""
    import lmforge
    from lmforge.plugins.samplers.hf_generate import HFGenerateSampler

    if settings.k < 2:
        raise ConfigError(f"--k: {settings.k}; ranking needs at least 2 candidates per prompt")
    sampler = HFGenerateSampler(n=settings.k, max_new_tokens=settings.max_new_tokens, do_sample=True,
                                temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed,
                                system_prompt=settings.system_prompt, max_prompts=settings.max_prompts)
    context = lmforge.RunContext(stage_name="rank.sampler", hardware=lmforge.Hardware(device=device),
                                 seed=settings.seed)
    samples_dir, _ = lmforge.run_stage(sampler, {"model": model_dir, "prompts": prompts_file},
                                       session_dir / "samples", context)
    by_prompt: dict[int, dict[str, Any]] = {}
    with open(samples_dir / "completions.jsonl", encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            entry = by_prompt.setdefault(row["index"], {"prompt": row["prompt"], "texts": []})
            entry["texts"].append(row["completion"])
    order = sorted(by_prompt)
    from lmforge.hub import resolve_model_ref

    meta = {"model": str(resolve_model_ref(model_dir).path.resolve()),
            "prompts": str(Path(prompts_file).resolve()),
            "sampling": settings.__dict__, "created": time.time()}
    return RankSession.create(session_dir, [by_prompt[i]["prompt"] for i in order],
                              [by_prompt[i]["texts"] for i in order], meta)


def open_or_create(args) -> RankSession:
    from lmforge.hub import resolve_model_ref

    session_dir = Path(args.session)
    if (session_dir / "candidates.jsonl").is_file():
        session = RankSession(session_dir)
        meta = json.loads((session_dir / "session.json").read_text(encoding="utf-8"))
        if args.model_dir and resolve_model_ref(args.model_dir).path.resolve() != Path(meta["model"]):
            raise ConfigError(f"--session {session_dir}: holds candidates of {meta['model']}, not "
                              f"{args.model_dir}; pick another --session directory")
        if args.prompts and Path(args.prompts).resolve() != Path(meta["prompts"]):
            raise ConfigError(f"--session {session_dir}: holds prompts from {meta['prompts']}, not "
                              f"{args.prompts}; pick another --session directory")
        print(f"lmforge rank: resuming {session_dir} ({len(session.prompts)} prompts)", file=sys.stderr)
        return session
    if not args.model_dir or not args.prompts:
        raise ConfigError(f"--session {session_dir}: no session there yet; give <model_dir> and --prompts to "
                          "sample candidates")
    settings = SamplingSettings(k=args.k, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                top_p=args.top_p, seed=args.seed, system_prompt=args.system_prompt,
                                max_prompts=args.max_prompts)
    return sample_candidates(args.model_dir, Path(args.prompts), session_dir, settings, args.device)


# --------------------------------------------------------------------------------------------------- server

class RankHandler(LocalPageHandler):
    server: RankServer

    @property
    def quiet(self) -> bool:
        return not self.server.verbose

    def do_GET(self):
        if self.refuse_foreign_host():
            return None
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path in ("/", "/index.html"):
            return self.send_body(200, PAGE.read_bytes(), "text/html; charset=utf-8")
        if url.path == "/api/state":
            annotator = (query.get("annotator") or [self.server.default_annotator])[0]
            return self.send_json({**self.server.session.state(annotator),
                               "default_annotator": self.server.default_annotator})
        if url.path == "/api/agreement":
            return self.send_json(agreement(self.server.session))
        return self.send_json({"error": f"no such path {url.path}"}, HTTPStatus.NOT_FOUND)

    def handle_post(self, path: str, body: dict):
        if path == "/api/judge":
            if not isinstance(body.get("annotator"), str):
                raise DataError("annotator: expected a name (a string)")
            event = self.server.session.record(body.get("annotator"), body.get("prompt_id"),
                                               body.get("ranking"), body.get("skipped") is True)
            return self.send_json({"ok": True, "event": event})
        if path == "/api/export":
            mode = body.get("mode") or "all_pairs"
            if mode not in EXPORT_MODES:  # also keeps the file name inside the session directory
                raise ConfigError(f"mode: {mode!r} is not one of {', '.join(EXPORT_MODES)}")
            out = self.server.session.directory / f"preferences.{mode}.jsonl"
            result = export_preferences(self.server.session, out, mode)
            return self.send_json({"ok": True, **result, "agreement": agreement(self.server.session)})
        return self.send_json({"error": f"no such path {path}"}, HTTPStatus.NOT_FOUND)


class RankServer(LocalPageServer):
    def __init__(self, session: RankSession, host: str = "127.0.0.1", port: int = 0,
                 default_annotator: str = "", verbose: bool = False):
        super().__init__(host, port, RankHandler)
        self.session = session
        self.default_annotator = default_annotator
        self.verbose = verbose


def start_server(session: RankSession, host: str = "127.0.0.1", port: int = 0, annotator: str = "") -> RankServer:
    """Serve the ranking page in a background thread (port 0: any free port); ``.shutdown()`` stops it."""
    return RankServer(session, host, port, annotator).serve_in_background("lmforge-rank")


# --------------------------------------------------------------------------------------------------- terminal

TERMINAL_HELP = ("order best first, e.g. '2 1 3 4'; '=' joins a tie ('2=1 3 4'); unnamed ones go last, tied; "
                 "'s' skips, 'q' quits")


def parse_terminal_ranking(line: str, count: int) -> list[list[int]]:
    """'2=1 3' over 4 candidates (shown 1-based) -> [[1, 0], [2], [3]] (0-based ids, leftovers last)."""
    groups, seen = [], set()
    for token in line.replace(",", " ").split():
        group = []
        for part in token.split("="):
            if not part.isdigit() or not 1 <= int(part) <= count:
                raise DataError(f"'{part}' is not a candidate number 1..{count}")
            candidate = int(part) - 1
            if candidate in seen:
                raise DataError(f"candidate {part} named twice")
            seen.add(candidate)
            group.append(candidate)
        groups.append(group)
    rest = [c for c in range(count) if c not in seen]
    if not groups:
        raise DataError("empty ranking")
    return groups + ([rest] if rest else [])


def rank_in_terminal(session: RankSession, annotator: str, read=input, write=print) -> int:
    """Rank every prompt this annotator has not judged yet; returns how many were judged now."""
    done = set(session.judgements().get(annotator, {}))
    todo = [p for p in session.prompts if p["prompt_id"] not in done]
    write(f"{len(done)}/{len(session.prompts)} judged by {annotator}; {len(todo)} to go. {TERMINAL_HELP}")
    judged = 0
    for number, prompt in enumerate(todo, 1):
        write(f"\n=== prompt {prompt['prompt_id'] + 1} ({number}/{len(todo)}) ===")
        for message in prompt["prompt"]:
            write(f"[{message['role']}] {message['content']}")
        for candidate in prompt["candidates"]:
            write(f"\n--- {candidate['id'] + 1} ---\n{candidate['text']}")
        while True:
            try:
                line = read("\nranking> ").strip()
            except EOFError:
                return judged
            if line.lower() == "q":
                return judged
            if line.lower() == "s":
                session.record(annotator, prompt["prompt_id"], skipped=True)
                break
            try:
                ranking = parse_terminal_ranking(line, len(prompt["candidates"]))
            except DataError as exc:
                write(f"  {exc}; {TERMINAL_HELP}")
                continue
            session.record(annotator, prompt["prompt_id"], ranking)
            judged += 1
            break
    return judged


# --------------------------------------------------------------------------------------------------- commands

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
