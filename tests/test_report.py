"""The run report and ``lmforge compare``: every logged metric plotted (training and validation loss on one
plot), model text shown as text (never an image, link or HTML), and the pages as a browser shows them.

The runs come from lmforge's real pipeline runner with a small in-test stage that logs curves through
``context.log_metrics`` and writes ``completions.jsonl`` like a sampler — the report is the thing under test.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import lmforge
import pytest
from lmforge.cli import main

EVIL = "![x](http://example.com/x.png) and [click](http://example.com) <script>alert(1)</script> **not bold**"


@dataclass
class CurvyConfig:
    lr: float = 1e-3


class Curvy(lmforge.Sampler):
    """Logs a training curve, a validation curve, a learning rate and a metric of its own; writes samples."""

    config_class = CurvyConfig
    inputs: ClassVar[dict] = {}

    def run(self, inputs, output_dir, context):
        for step in range(1, 7):
            context.log_metrics({"loss": 3.0 - 0.3 * step, "lr": self.config.lr * step, "my_metric": step ** 2,
                                 "epoch": step / 6}, step=step)
            if step % 2 == 0:
                context.log_metrics({"val_loss": 3.2 - 0.25 * step}, step=step)
        context.log_metrics({"final_score": 0.5 + self.config.lr}, step=6)
        rows = [{"prompt": [{"role": "user", "content": "Say hi"}], "completion": EVIL},
                {"prompt": "![\nline two", "completion": "![\n# not a heading\n| a | b |"}]
        (Path(output_dir) / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return output_dir


@pytest.fixture(scope="module")
def curvy_plugin():
    with lmforge.registered("sampler", "curvy_test", Curvy):
        yield


def _run(root: Path, name: str, lr: float) -> Path:
    cfg = {"run": {"root": str(root), "name": name, "seed": 0, "report": True, "quiet": True},
           "hardware": {"device": "cpu"}, "pipeline": {"stages": {"curvy": {}}},
           "curvy": {"kind": "sampler", "plugin": "curvy_test", "lr": lr}}
    return lmforge.run(cfg).run_dir


@pytest.fixture(scope="module")
def two_runs(curvy_plugin, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return _run(root, "slow_lr", 1e-3), _run(root, "fast_lr", 3e-3)


def test_report_plots_every_logged_metric_with_train_and_val_loss_together(two_runs):
    run_dir = two_runs[0]
    plots = sorted(p.name for p in (run_dir / "report_plots").iterdir())
    assert plots == ["curvy_loss_val_loss.png", "curvy_lr.png", "curvy_my_metric.png"]  # epoch is no curve
    markdown = (run_dir / "report.md").read_text()
    assert "![curvy: loss \\(training and validation\\)](report_plots/curvy_loss_val_loss.png)" in markdown
    assert "| final\\_score | 0.501 |" in markdown  # the last value of every metric, tabled


def test_report_shows_headline_curves_and_collapses_the_rest(two_runs):
    """Loss and learning rate open, in that order; the stage's own metric and the table of last values in a
    closed <details> section, in report.md and report.html alike."""
    markdown = (two_runs[0] / "report.md").read_text()
    opened, collapsed = markdown.split("<details><summary>curvy: 1 more curve and the last value of all ", 1)
    assert opened.index("curvy_loss_val_loss.png") < opened.index("curvy_lr.png")
    assert "curvy_my_metric.png" not in opened
    collapsed = collapsed.split("</details>", 1)[0]
    assert "curvy_my_metric.png" in collapsed and "| final\\_score | 0.501 |" in collapsed
    page = (two_runs[0] / "report.html").read_text()
    details = page[page.index("<details><summary>curvy: 1 more curve"):page.index("</details>")]
    assert 'src="report_plots/curvy_my_metric.png"' in details and "<td>final_score</td>" in details
    assert "&lt;details&gt;" not in page


class Proud(Curvy):
    """Names its own metric as a headline: it is plotted open, beside the loss."""

    headline_metrics = ("my_metric",)


def test_a_plugin_names_its_own_headline_metrics(tmp_path):
    cfg = {"run": {"root": str(tmp_path), "name": "proud", "report": True, "quiet": True},
           "hardware": {"device": "cpu"}, "pipeline": {"stages": {"curvy": {}}},
           "curvy": {"kind": "sampler", "plugin": "proud_test"}}
    with lmforge.registered("sampler", "proud_test", Proud):
        run_dir = lmforge.run(cfg).run_dir
    markdown = (run_dir / "report.md").read_text()
    opened = markdown.split("<details>", 1)[0]
    assert opened.index("curvy_loss_val_loss.png") < opened.index("curvy_lr.png") < opened.index("curvy_my_metric")
    assert "<details><summary>curvy: the last value of all " in markdown


def test_report_html_renders_markdown_and_keeps_model_text_literal(two_runs):
    page = (two_runs[0] / "report.html").read_text()
    assert "<strong>prompt:</strong>" in page and "**prompt:**" not in page
    assert "<table>" in page
    assert "http://example.com" in page  # shown …
    assert 'src="http' not in page and 'href="http' not in page and "<script>" not in page  # … never live
    assert html.escape("![x](http://example.com/x.png)", quote=False) in page
    assert html.escape("<script>alert(1)</script> **not bold**", quote=False) in page
    assert "<h1>not a heading" not in page and "<h1>" in page
    images = [line for line in page.splitlines() if "<img" in line]
    assert images and all('src="report_plots/' in line for line in images)


def test_compare_overlays_runs_and_tables_metrics_and_config(two_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    main(["compare", str(two_runs[0]), str(two_runs[1]), "-o", str(out)])
    assert f"{out / 'compare.html'}" in capsys.readouterr().out
    markdown = (out / "compare.md").read_text()
    assert "| curvy\\.lr | 0.001 | 0.003 |" in markdown  # the config key that differs
    assert "| final\\_score | 0.501 | 0.503 |" in markdown
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["curvy_loss_val_loss.png", "curvy_lr.png",
                                                                 "curvy_my_metric.png"]
    opened, folded = markdown.split("<details>", 1)
    assert "curvy_loss_val_loss.png" in opened and "curvy_lr.png" in opened  # headline curves open
    assert "curvy_my_metric.png" in folded and "| final\\_score |" in folded  # the rest, and the table, folded


def test_compare_refuses_a_directory_without_a_run(two_runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", str(two_runs[0]), str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no finished stage here" in capsys.readouterr().err


def _loaded_images(driver) -> list[tuple[str, int]]:
    return driver.execute_script(
        "return [...document.images].map(i => [i.getAttribute('src'), i.complete ? i.naturalWidth : 0])")


def test_report_and_compare_pages_in_a_browser(browser, two_runs, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get((two_runs[0] / "report.html").as_uri())
    assert browser.find_element(By.TAG_NAME, "h1").text == "Run report: slow_lr"
    images = _loaded_images(browser)
    assert len(images) == 3 and all(src.startswith("report_plots/") and width > 0 for src, width in images)
    assert [s.text for s in browser.find_elements(By.TAG_NAME, "strong")][:2] == ["prompt:", "completion:"]
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "![x](http://example.com/x.png)" in body and "<script>alert(1)</script>" in body
    assert browser.find_elements(By.CSS_SELECTOR, "a, script") == []
    for summary in browser.find_elements(By.TAG_NAME, "summary"):  # open the collapsed sections
        summary.click()
    cells = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "td")]
    assert "final_score" in cells and "curvy" in cells

    out = tmp_path / "cmp"
    page = lmforge.plugins.report.compare_runs(list(two_runs), out)
    browser.get(page.as_uri())
    for summary in browser.find_elements(By.TAG_NAME, "summary"):  # the metrics table is folded
        summary.click()
    headers = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "th")]
    assert headers.count("slow_lr") >= 2 and headers.count("fast_lr") >= 2  # config and metrics tables
    images = _loaded_images(browser)
    assert len(images) == 3 and all(width > 0 for _, width in images)


SAME = {"prompt": [{"role": "user", "content": "What is the opposite of laugh?"}],
        "completion": "The opposite of loud is quiet."}


@dataclass
class ProbeConfig:
    pass


class Probe(lmforge.Evaluator):
    """Held-out items that repeat after normalisation: 5 texts, 3 distinct questions."""

    name = "probe_report"
    config_class = ProbeConfig

    def held_out_items(self):
        return ["What is 7 + 3?", "What is 3 plus 7?", "Add 0 and 7.", "add 7 and 0", "Where is Peru?"]

    def evaluate(self, artifact, inputs, context):
        return {"asked": 1.0}


class Repetitive(lmforge.Sampler):
    """Samples like a preference stage: several samples per prompt, most of them the same text; logs counts
    (one as a whole float, as manifests often hold them) and a rate."""

    config_class = CurvyConfig
    inputs: ClassVar[dict] = {}

    def run(self, inputs, output_dir, context):
        rows = [SAME] * 6 + [{**SAME, "completion": "The opposite of right is outside."}, SAME]
        rows += [{"prompt": [{"role": "user", "content": "What is 2 plus 2?"}], "completion": "4."}] * 3
        (Path(output_dir) / "completions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        context.log_metrics({"pairs": 1137.0, "chars_out": 1757327, "my_rate": 0.70234}, step=1)
        return output_dir


@pytest.fixture(scope="module")
def repetitive_run(tmp_path_factory):
    cfg = {"run": {"root": str(tmp_path_factory.mktemp("runs")), "name": "repetitive", "report": True,
                   "quiet": True},
           "hardware": {"device": "cpu"}, "pipeline": {"stages": {"preferences": {}}},
           "preferences": {"kind": "sampler", "plugin": "repetitive_test"},
           "evaluation": {"preferences": [{"name": "probe_report"}]}}
    with lmforge.registered("sampler", "repetitive_test", Repetitive), \
            lmforge.registered("evaluator", "probe_report", Probe):
        return (lmforge.run(cfg).run_dir / "report.md").read_text()


def test_report_samples_are_distinct_and_of_distinct_prompts_first(repetitive_run):
    samples = repetitive_run.split("### Samples", 1)[1]
    shown = re.findall(r"\*\*prompt:\*\*\n\n> (.*)\n\n\*\*completion:\*\*\n\n> (.*)\n", samples)
    assert shown == [("What is the opposite of laugh?", "The opposite of loud is quiet\\."),
                     ("What is 2 plus 2?", "4\\."),
                     ("What is the opposite of laugh?", "The opposite of right is outside\\.")]


def test_report_prints_counts_as_integers_with_separators(repetitive_run):
    assert "| pairs | 1,137 |" in repetitive_run and "| chars\\_out | 1,757,327 |" in repetitive_run
    assert "| my\\_rate | 0.7023 |" in repetitive_run  # other floats as before
    assert "| preferences | preference pairs made from its own answers | 1,137 |" in repetitive_run
    assert "e+0" not in repetitive_run
    from lmforge.plugins.report import format_number

    assert format_number(1137.0) == "1,137" and format_number(5.184705528587072e21) == "5.185e+21"  # no count


def test_report_says_overlap_items_are_distinct_questions(repetitive_run):
    assert ("**preferences**: overlap with training data: 0 of 3 distinct held-out items (from 5 held-out texts; "
            "texts equal after normalisation") in repetitive_run
