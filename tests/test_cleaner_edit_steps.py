"""``cleaner.add`` / ``cleaner.remove``: one step in or out of a cleaner's list without restating it."""

from __future__ import annotations

import lmforge
import pytest


def _steps(*overrides):
    return lmforge.stage("cleaner", lmforge.compose(list(overrides))).config.steps


def test_remove_and_add_with_a_place_in_the_standard_recipe():
    default = _steps("cleaner=standard")
    steps = _steps("cleaner=standard", "cleaner.remove=[pii,harmful]",
                   "cleaner.add=[{name: quality, min_words: 5, after: normalize}, exact_dedup]")
    names = [s if isinstance(s, str) else s["name"] for s in steps]
    assert "pii" not in names and "harmful" not in names
    assert names[:2] == ["normalize", "quality"] and steps[1] == {"name": "quality", "min_words": 5}
    assert names[-1] == "exact_dedup" and len(steps) == len(default) - 2 + 2


def test_add_before_in_the_basic_cleaner_and_the_run_uses_it(tmp_path):
    steps = _steps("cleaner=basic", "cleaner.add=[{name: normalize, before: exact_dedup}]", "cleaner.remove=[normalize]")
    assert [s if isinstance(s, str) else s["name"] for s in steps] == ["normalize", "exact_dedup", "quality"]
    cfg = lmforge.compose(["pipeline=clean_only", "cleaner=basic", f"run.root={tmp_path}", "run.report=false", "run.quiet=true",
                           "cleaner.remove=[quality]"])
    result = lmforge.run(cfg)
    report = (result.artifacts["cleaner"] / "report.json").read_text()
    assert "quality" not in report and "exact_dedup" in report


@pytest.mark.parametrize("override, message", [
    ("cleaner.remove=[pi]", "cleaner.remove: no step 'pi' in cleaner.steps; steps: normalize"),
    ("cleaner.add=[{name: quality, after: nope}]", "cleaner.add: quality: after 'nope': no such step"),
    ("cleaner.add=[{name: quality, after: normalize, before: quality}]", "give 'before' or 'after', not both"),
])
def test_bad_edits_name_the_key(override, message):
    with pytest.raises(lmforge.ConfigError, match=message.replace("(", r"\(")):
        _steps("cleaner=basic", override)
