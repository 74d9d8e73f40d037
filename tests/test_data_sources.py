"""Data sources: every form a data input takes reaches every stage that reads data (issue 13, item 2).

The forms: a file (json, jsonl, csv, tsv, parquet, arrow, txt; gzip), a glob, a directory of such files, a
``save_to_disk`` directory, a Hub dataset id (``org/name``, ``org/name:subset``, ``split=``) from a Hub cache
the test builds itself, and a mixture (a list of sources with ``weight`` / ``limit``).
"""

from __future__ import annotations

import os
from pathlib import Path

import lmforge


def test_tiny_shakespeare_ships_in_the_package(shared_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the worked example must not depend on where the repo is
    cfg = lmforge.compose(["pipeline=shakespeare_char"])
    text = Path(cfg.data.shakespeare)
    assert text.is_file() and os.path.isabs(text)
    assert text.read_bytes() == (shared_data / "tinyshakespeare.txt").read_bytes()
    assert "tinyshakespeare.txt" in (text.parent / "ATTRIBUTION.md").read_text()
