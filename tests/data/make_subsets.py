"""Cut the tests' real-data subsets out of the full public files (the table in README.md says which rows).

    python tests/data/make_subsets.py /path/to/data   # the directory holding the full files

Deterministic: the same full files give byte-identical subsets (gzip without a name or a time stamp).
"""

from __future__ import annotations

import gzip
import io
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HH_MALFORMED = [1255, 1689, 1951, 1953, 2037]  # 1-based lines whose chosen and rejected prompts differ


def write_gzip(path: Path, text: str) -> None:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as handle:
        handle.write(text.encode("utf-8"))
    path.write_bytes(buffer.getvalue())


def json_subset(source: Path, first: int, short_chars: int = 0, length=None) -> str:
    """The first ``first`` records of a JSON list and every later one whose ``length`` is under ``short_chars``
    (short conversations fit the fine-tuning tests' 96-token rows), written as the source writes them."""
    records = json.loads(source.read_text(encoding="utf-8"))
    keep = [r for i, r in enumerate(records) if i < first or (short_chars and length(r) < short_chars)]
    return json.dumps(keep, indent=2, ensure_ascii=False) + "\n"


def sharegpt_chars(record: dict) -> int:
    return sum(len(turn["value"]) for turn in record["conversations"]) + len(record["chosen"]["value"])


def messages_chars(record: dict) -> int:
    return sum(len(message["content"]) for message in record["messages"])


def main(full: Path) -> None:
    def lines(name: str) -> list[str]:
        return (full / name).read_text(encoding="utf-8").splitlines(keepends=True)

    write_gzip(HERE / "gsm8k_test.jsonl.gz", "".join(lines("gsm8k_test.jsonl")))  # the whole test split
    write_gzip(HERE / "c4_demo.jsonl.gz", "".join(lines("c4_demo.jsonl")[:120]))
    write_gzip(HERE / "wiki_demo.txt.gz", "".join(lines("wiki_demo.txt")[:10]))
    with gzip.open(full / "hh_rlhf_harmless_test.jsonl.gz", "rt", encoding="utf-8") as handle:
        hh = handle.readlines()
    write_gzip(HERE / "hh_rlhf_harmless_test.jsonl.gz", "".join(hh[:40] + [hh[n - 1] for n in HH_MALFORMED]))
    (HERE / "identity.json").write_bytes((full / "identity.json").read_bytes())  # all 91 records
    subsets = {"alpaca_en_demo.json": json_subset(full / "alpaca_en_demo.json", 120),
               "dpo_en_demo.json": json_subset(full / "dpo_en_demo.json", 10, 600, sharegpt_chars),
               "kto_en_demo.json": json_subset(full / "kto_en_demo.json", 20, 600, messages_chars)}
    for name, text in subsets.items():
        (HERE / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/make_subsets.py /path/to/full/data")
    main(Path(sys.argv[1]))
