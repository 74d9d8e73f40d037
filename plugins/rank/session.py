"""A ranking session directory: the candidates to rank and the append-only, fsynced log of judgements."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from lmforge.errors import DataError, MissingArtifact


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
