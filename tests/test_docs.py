"""The docs keep up with the code: every hookspec and every built-in plugin is documented."""

from __future__ import annotations

from pathlib import Path

import lmforge
from lmforge import hookspecs

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_every_hookspec_is_documented_in_write_a_plugin():
    text = (DOCS / "write-a-plugin.md").read_text()
    specs = [name for name in dir(hookspecs) if name.startswith("lmforge_")]
    assert specs and [s for s in specs if f"`{s}(" not in text] == []


def test_every_builtin_plugin_appears_in_the_docs():
    text = "\n".join(p.read_text() for p in DOCS.rglob("*.md"))
    missing = [f"{e.kind}/{e.name}" for e in lmforge.registry().entries()
               if e.origin.startswith("lmforge ") and f"`{e.name}`" not in text]
    assert missing == []
