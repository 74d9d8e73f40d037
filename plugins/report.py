"""The run report (``runs/<name>/report.md`` + ``report.html`` with PNG plots) and ``lmforge compare``.

A plugin on the ``lmforge_pipeline_end`` hook, built only from what the stages left on disk (manifests,
``metrics.jsonl``, the cleaner's ``report.json``, ``completions.jsonl``), so it reports on skipped stages too
and a third-party stage gets its curves for free: every numeric metric a stage logs at two or more steps is
plotted and every metric's last value is tabled. What a person reads first is shown first — loss (training
and validation on one plot), reward and accuracy, KL, learning rate, gradient norm, throughput
(:data:`HEADLINE`), plus the metrics a stage class names in its ``headline_metrics`` attribute; every other
curve and the table of last values sit in a collapsed ``<details>`` section under them.
``run.report=false`` turns it off.

Why markdown-it-py: the page is a real CommonMark rendering (bold, tables, quotes) rather than a hand-made
converter, with raw HTML off. Model text (prompts, completions) is backslash-escaped before it enters the
markdown, so a completion reading ``![x](http://…)`` shows as those characters — never a remote image or a
link — in report.md and report.html alike.

``lmforge compare RUN_A RUN_B [...]`` overlays the runs' curves stage by stage and tables their final metrics
and the config keys that differ.
"""

from __future__ import annotations

import argparse
import html
import json
import re
from pathlib import Path

from lmforge import hookimpl, plugin_manager

LOSS_KEYS = ("loss", "eval_loss", "val_loss")  # drawn together: training and validation loss on one plot
TITLES = {"loss": "training loss", "eval_loss": "validation loss", "val_loss": "validation loss",
          "learning_rate": "learning rate", "lr": "learning rate", "grad_norm": "gradient norm",
          "rewards/accuracies": "reward accuracy", "rewards/margins": "reward margin", "reward": "reward",
          "kl": "KL to reference", "objective/kl": "KL to reference", "tokens_per_s": "tokens per second",
          "ms_per_step": "ms per step", "mfu": "model FLOPs utilisation"}
NOT_CURVES = {"epoch", "step", "time", "total_flos", "train_runtime", "train_samples_per_second",
              "train_steps_per_second", "num_tokens", "eval_runtime", "eval_samples_per_second",
              "eval_steps_per_second"}  # bookkeeping: in the metrics table, not worth a plot
SAMPLES_PER_STAGE = 4
HEADLINE = (  # the curves shown open, in this order (loss keys share one plot); the rest are collapsed
    *LOSS_KEYS, "reward", "objective/rlhf_reward", "rewards/accuracies", "eval_rewards/accuracies", "accuracy",
    "eval_accuracy", "kl", "objective/kl", "learning_rate", "lr", "grad_norm", "tokens_per_s")


# ---------------------------------------------------------------- reading a run


def read_metrics(artifact: Path) -> list[dict]:
    path = Path(artifact) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves(rows: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """Every numeric metric logged at two or more distinct steps -> its (step, value) points, by step."""
    points: dict[str, dict[float, float]] = {}
    for row in rows:
        step = row.get("step")
        if step is None:
            continue
        for key, value in row.items():
            if key in NOT_CURVES or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            points.setdefault(key, {})[step] = value
    return {key: sorted(by_step.items()) for key, by_step in points.items() if len(by_step) >= 2}


def plot_groups(keys) -> list[tuple[str, list[str]]]:
    """(title, metric keys) per plot: the loss keys share the first plot, each other metric gets its own."""
    keys = list(keys)
    losses = [k for k in LOSS_KEYS if k in keys]
    groups = [("loss (training and validation)" if len(losses) > 1 else TITLES[losses[0]], losses)] if losses else []
    groups += [(TITLES.get(k, k), [k]) for k in keys if k not in losses]
    return groups


def read_run(run_dir: Path) -> dict[str, dict]:
    """A finished run's stage manifests, in pipeline order (stage dirs without a manifest are left out)."""
    from lmforge import is_complete, read_manifest

    run_dir = Path(run_dir)
    order = []
    config = run_dir / "config.json"
    if config.is_file():
        order = list((json.loads(config.read_text()).get("pipeline") or {}).get("stages") or {})
    found = sorted(p.name for p in run_dir.iterdir() if p.is_dir() and is_complete(p)) if run_dir.is_dir() else []
    names = [n for n in order if n in found] + [n for n in found if n not in order]
    return {name: read_manifest(run_dir / name) for name in names}


# ---------------------------------------------------------------- plots


def _figure(title: str, lines: list[tuple[str, list, list]], ylabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for label, steps, values in lines:
        ax.plot(steps, values, marker="o", markersize=2, linewidth=1.3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(lines) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _file_name(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "_".join(parts)) + ".png"


def plot_curves(stage: str, rows: list[dict], out_dir: Path, keys=None) -> list[tuple[str, str]]:
    """One PNG per plot group of a stage's curves (only ``keys`` where given); returns (title, file name) pairs."""
    series = curves(rows)
    made = []
    for title, group in plot_groups(k for k in (series if keys is None else keys) if k in series):
        lines = [(TITLES.get(k, k) if len(group) > 1 else k, *zip(*series[k])) for k in group]
        name = _file_name(stage, *group)
        _figure(f"{stage}: {title}", lines, "loss" if group[0] in LOSS_KEYS else group[0], Path(out_dir) / name)
        made.append((f"{stage}: {title}", name))
    return made


def headline_metrics(manifest: dict) -> tuple[str, ...]:
    """The curves a person reads first for a stage: :data:`HEADLINE`, then those its class names in
    ``headline_metrics`` (a tuple of metric keys; a class that cannot be imported any more names none)."""
    from lmforge.registry import load_target

    own: tuple[str, ...] = ()
    implementation = manifest.get("implementation")
    if isinstance(implementation, str) and ":" in implementation:
        try:
            own = tuple(getattr(load_target(implementation), "headline_metrics", ()) or ())
        except Exception:  # noqa: BLE001 - a report on an old run must not fail on a plugin since removed
            own = ()
    return (*HEADLINE, *(k for k in own if k not in HEADLINE))


def split_curves(rows: list[dict], headline) -> tuple[list[str], list[str]]:
    """A stage's curve keys: (headline ones, in headline order; the others, in logged order)."""
    keys = list(curves(rows))
    shown = [k for k in headline if k in keys]
    return shown, [k for k in keys if k not in shown]


# ---------------------------------------------------------------- markdown


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~&])")


def escape_markdown(text: str) -> str:
    """Model or user text as literal markdown: every character that could start markup is backslash-escaped,
    so no image, link, autolink, HTML, heading or table can come out of it."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def _quote(text: str) -> list[str]:
    return [f"> {escape_markdown(line)}" if line.strip() else ">" for line in str(text).splitlines() or [""]]


def format_number(value: float, float_format: str = ".4g") -> str:
    """A metric as a person reads it: a count (an int, or a whole float — manifests often hold counts as floats
    such as 1137.0) with thousands separators ("1,137"), any other float in ``float_format`` ("0.702")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return escape_markdown(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"  # a whole float past 1e15 is no count (a capped perplexity, FLOPs): .4g below
    return f"{value:{float_format}}"


def _value(value, group: bool = True) -> str:
    """A table cell: numbers by :func:`format_number` (``group=False``: a config value as written, no
    separators), anything else as literal text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if group:
            return format_number(value)
        if isinstance(value, float):
            return f"{value:.4g}"
    return escape_markdown(json.dumps(value) if isinstance(value, (dict, list)) else value)


def _metrics_table(metrics: dict) -> list[str]:
    rows = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)]
    if not rows:
        return []
    return ["| metric | last value |", "|---|---|", *[f"| {escape_markdown(k)} | {_value(v)} |" for k, v in rows], ""]


def pick_samples(rows, count: int = SAMPLES_PER_STAGE) -> list[tuple[str, str]]:
    """Up to ``count`` distinct (prompt, completion) pairs from ``completions.jsonl`` rows (a sampler writes
    several samples per prompt, often the same text): one per prompt first, in file order, then other
    completions of those prompts when there are fewer prompts than ``count``. Reads only as far as it needs
    once ``count`` prompts are found."""
    first, others, seen = [], [], set()
    for sample in rows:
        prompt = sample.get("prompt", "")
        if isinstance(prompt, list):
            prompt = prompt[-1].get("content", "") if prompt and isinstance(prompt[-1], dict) else ""
        pair = (str(prompt), str(sample.get("completion", "")))
        if pair in seen:
            continue
        seen.add(pair)
        if all(shown[0] != pair[0] for shown in first):
            first.append(pair)
            if len(first) == count:
                break
        elif len(others) < count:
            others.append(pair)
    return (first + others)[:count]


def _samples(artifact: Path) -> list[str]:
    completions = artifact / "completions.jsonl"
    if not completions.is_file():
        return []
    lines = ["### Samples", ""]
    with open(completions, encoding="utf-8") as handle:
        rows = (json.loads(raw) for raw in handle if raw.strip())
        for prompt, completion in pick_samples(rows):
            lines += ["**prompt:**", "", *_quote(prompt[:300]), "", "**completion:**", "",
                      *_quote(completion[:600]), "", "---", ""]
    return lines


def _collapsed(summary: str, body: list[str]) -> list[str]:
    """A ``<details>`` section (closed): raw HTML in report.md, rendered around its markdown in report.html."""
    return [f"<details><summary>{html.escape(summary)}</summary>", "", *body, "</details>", ""] if body else []


def _stage_curves(stage: str, manifest: dict, artifact: Path, plots_dir: Path) -> list[str]:
    """A stage's headline plots and pictures, then its other curves and every metric's last value, collapsed."""
    rows = read_metrics(artifact)
    shown, others = split_curves(rows, headline_metrics(manifest))
    lines = []
    for title, name in plot_curves(stage, rows, plots_dir, shown):
        lines += [f"![{escape_markdown(title)}](report_plots/{name})", ""]
    for image in sorted(artifact.glob("*.png")):  # pictures a stage or evaluator drew (the language map)
        lines += [f"![{escape_markdown(image.stem.replace('_', ' '))}]({stage}/{image.name})", ""]
    more = []
    for title, name in plot_curves(stage, rows, plots_dir, others):
        more += [f"![{escape_markdown(title)}](report_plots/{name})", ""]
    table = _metrics_table(manifest.get("metrics", {}))
    count = len(table) - 3 if table else 0
    parts = [f"{len(others)} more curve{'s' * (len(others) != 1)}" if others else "",
             f"the last value of all {count} metrics" if count else ""]
    return lines + _collapsed(f"{stage}: " + " and ".join(p for p in parts if p), more + table)


def _contributed_sections(run_dir: Path, manifests: dict) -> list[str]:
    """Sections other plugins contribute through ``lmforge_report_sections`` (an evaluator's summary)."""
    lines = []
    for sections in plugin_manager().hook.lmforge_report_sections(run_dir=run_dir, manifests=manifests):
        for section in sections or []:
            lines += [section, ""]
    return lines


def build_report(run_dir: Path, manifests: dict[str, dict]) -> Path:
    run_dir = Path(run_dir)
    plots_dir = run_dir / "report_plots"
    plots_dir.mkdir(exist_ok=True)
    lines = [f"# Run report: {escape_markdown(run_dir.name)}", ""]
    lines += ["| stage | plugin | seconds | artifact |", "|---|---|---|---|"]
    for stage, manifest in manifests.items():
        plugin = manifest.get("plugin", manifest.get("implementation"))
        lines.append(f"| {escape_markdown(stage)} | {escape_markdown(plugin)} | {manifest.get('seconds', 0):.1f} | "
                     f"`{stage}/` |")
    lines.append("")
    lines += _contributed_sections(run_dir, manifests)
    for stage, manifest in manifests.items():
        artifact = run_dir / stage
        lines += [f"## {escape_markdown(stage)}", ""]
        cleaning = artifact / "report.json"
        if cleaning.is_file():
            report = json.loads(cleaning.read_text())
            docs_out, docs_in, chars_out, chars_in = (format_number(report[k]) for k in
                                                      ("docs_out", "docs_in", "chars_out", "chars_in"))
            lines += [f"Kept **{docs_out}** of {docs_in} documents ({chars_out} of {chars_in} characters).", ""]
            if report.get("removed"):
                lines += ["| removed by | documents |", "|---|---|"]
                lines += [f"| {escape_markdown(r)} | {format_number(count)} |"
                          for r, count in sorted(report["removed"].items())]
                lines.append("")
        lines += _stage_curves(stage, manifest, artifact, plots_dir)
        lines += _samples(artifact)
    markdown = "\n".join(lines) + "\n"
    # Text read from data may hold a lone surrogate (JSON's "\ud800"): written as \ud800, never a crash.
    (run_dir / "report.md").write_text(markdown, encoding="utf-8", errors="backslashreplace")
    (run_dir / "report.html").write_text(render_html(markdown, f"Run report: {run_dir.name}"), encoding="utf-8",
                                         errors="backslashreplace")
    return run_dir / "report.md"


STYLE = """body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 10px;text-align:left}
th{background:#f4f4f4}img{max-width:100%}p:has(>img){display:inline-block;width:49.5%;margin:0}blockquote{margin:.3em 0;padding:.2em 1em;border-left:4px solid #ccd;
background:#f8f8fb;white-space:pre-wrap}h2{border-bottom:1px solid #ddd;margin-top:2em}code{background:#f4f4f4}
details{margin:.5em 0}summary{cursor:pointer;color:#555}"""


_DETAILS = re.compile(r"<details><summary>([^<>]*)</summary>")


def render_html(markdown: str, title: str) -> str:
    """CommonMark + tables via markdown-it-py, raw HTML off (any ``<tag>`` in the text shows as text); the
    collapsed sections this module writes (a line ``<details><summary>…</summary>`` up to a line
    ``</details>``) become ``<details>`` elements around their rendered markdown. Model text cannot make such
    a line: its ``<`` is escaped."""
    from markdown_it import MarkdownIt

    renderer = MarkdownIt("commonmark", {"html": False}).enable("table")
    body, chunk = [], []
    for line in markdown.splitlines(keepends=True):
        opening = _DETAILS.fullmatch(line.rstrip("\n"))
        if opening or line.rstrip("\n") == "</details>":
            body.append(renderer.render("".join(chunk)))
            body.append(f"<details><summary>{opening.group(1)}</summary>\n" if opening else "</details>\n")
            chunk = []
        else:
            chunk.append(line)
    body.append(renderer.render("".join(chunk)))
    body = "".join(body)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}</body></html>\n")


# ---------------------------------------------------------------- compare


def _flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def compare_runs(run_dirs: list[Path], out_dir: Path) -> Path:
    """Overlaid curves (one line per run) for every stage and metric — the headline ones open, the others and
    the final-metrics table folded, as in the run report — and the config keys that differ. Writes ``compare.md`` + ``compare.html`` into ``out_dir``; returns the HTML path."""
    from lmforge.errors import ConfigError

    runs = {}
    for run_dir in map(Path, run_dirs):
        manifests = read_run(run_dir)
        if not manifests:
            raise ConfigError(f"compare: {run_dir}: no finished stage here (expected a run directory such as "
                              f"runs/<name> with <stage>/manifest.json inside)")
        label = run_dir.name if run_dir.name not in runs else str(run_dir)
        runs[label] = (run_dir, manifests)
    out_dir = Path(out_dir)
    (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    labels = list(runs)
    lines = [f"# Compare: {escape_markdown(' vs '.join(labels))}", "",
             "| run | directory | stages |", "|---|---|---|"]
    for label, (run_dir, manifests) in runs.items():
        lines.append(f"| {escape_markdown(label)} | `{run_dir}` | {escape_markdown(', '.join(manifests))} |")
    lines.append("")
    configs = {label: _flatten(json.loads((d / "config.json").read_text())) if (d / "config.json").is_file() else {}
               for label, (d, _) in runs.items()}
    keys = sorted({k for c in configs.values() for k in c if not k.startswith(("run.name", "run.root", "hydra."))})
    differ = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs.values()}) > 1]
    if differ:
        lines += ["## Config differences", "", "| key | " + " | ".join(map(escape_markdown, labels)) + " |",
                  "|---|" + "---|" * len(labels)]
        lines += [f"| {escape_markdown(k)} | " + " | ".join(_value(configs[lb].get(k, "—"), group=False)
                                                         for lb in labels) + " |"
                  for k in differ]
        lines.append("")
    stages = list(dict.fromkeys(s for _, manifests in runs.values() for s in manifests))
    for stage in stages:
        lines += [f"## {escape_markdown(stage)}", ""]
        series = {label: curves(read_metrics(d / stage)) for label, (d, m) in runs.items() if stage in m}
        all_keys = list(dict.fromkeys(k for s in series.values() for k in s))
        headline = headline_metrics(next(m[stage] for _, m in runs.values() if stage in m))
        shown = [k for k in headline if k in all_keys]
        plots = {False: [], True: []}  # headline curves open, the others collapsed (as in the run report)
        for title, group in plot_groups(shown) + plot_groups([k for k in all_keys if k not in shown]):
            plot_lines = [(f"{label}: {TITLES.get(k, k)}" if len(group) > 1 else label, *zip(*s[k]))
                          for label, s in series.items() for k in group if k in s]
            name = _file_name(stage, *group)
            _figure(f"{stage}: {title}", plot_lines, "loss" if group[0] in LOSS_KEYS else group[0],
                    out_dir / "plots" / name)
            plots[group[0] not in shown] += [f"![{escape_markdown(stage + ': ' + title)}](plots/{name})", ""]
        lines += plots[False]
        finals = {label: m[stage].get("metrics", {}) for label, (d, m) in runs.items() if stage in m}
        metric_keys = list(dict.fromkeys(k for f in finals.values() for k, v in f.items()
                                         if isinstance(v, (int, float)) and not isinstance(v, bool)))
        table = []
        if metric_keys:
            table += ["| metric | " + " | ".join(map(escape_markdown, labels)) + " |", "|---|" + "---|" * len(labels)]
            table += [f"| {escape_markdown(k)} | " + " | ".join(_value(finals.get(lb, {}).get(k, "—")) for lb in labels)
                      + " |" for k in metric_keys]
            table.append("")
        more = len(plots[True]) // 2
        parts = [f"{more} more curve{'s' * (more != 1)}" if more else "",
                 f"the last value of all {len(metric_keys)} metrics" if metric_keys else ""]
        lines += _collapsed(f"{stage}: " + " and ".join(p for p in parts if p), plots[True] + table)
    markdown = "\n".join(lines) + "\n"
    (out_dir / "compare.md").write_text(markdown, encoding="utf-8", errors="backslashreplace")
    page = out_dir / "compare.html"
    page.write_text(render_html(markdown, f"Compare: {' vs '.join(labels)}"), encoding="utf-8",
                    errors="backslashreplace")
    return page


def compare_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lmforge compare",
                                     description="Overlay the curves and table the metrics of two or more runs.")
    parser.add_argument("runs", nargs="+", help="run directories, e.g. runs/exp1 runs/exp2")
    parser.add_argument("-o", "--out", help="output directory (default: compare-<run>-<run>… beside the first run)")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("give two or more run directories")
    out = args.out or Path(args.runs[0]).resolve().parent / ("compare-" + "-".join(Path(r).name for r in args.runs))
    page = compare_runs(args.runs, Path(out))
    print(f"lmforge: compare: {page}")
    return 0


@hookimpl
def lmforge_cli_commands():
    return {"compare": ("overlay the curves and metrics of two or more runs (HTML page)", compare_command)}


@hookimpl
def lmforge_pipeline_end(run_dir, manifests, context):
    if not context.is_main_process or not (context.config.get("run") or {}).get("report", True) or not manifests:
        return
    build_report(run_dir, manifests)  # the console's closing lines name it
