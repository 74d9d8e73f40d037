"""The run report: ``runs/<name>/report.md`` and ``report.html`` with PNG plots, written at pipeline end.

A plugin on the ``lmforge_pipeline_end`` hook, built only from what the stages left on disk (manifests,
``metrics.jsonl``, the cleaner's ``report.json``, the tokenizer's report, ``completions.jsonl``), so it
reports on skipped stages too and a third-party stage gets its curves for free by logging metrics.
``run.report=false`` turns it off.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from lmforge import hookimpl

CURVES = (("loss", "training loss"), ("eval_loss", "validation loss"), ("learning_rate", "learning rate"),
          ("rewards/accuracies", "reward accuracy"), ("rewards/margins", "reward margin"),
          ("reward", "reward"), ("kl", "KL to reference"), ("objective/kl", "KL to reference"))


def read_metrics(artifact: Path) -> list[dict]:
    path = Path(artifact) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(stage: str, rows: list[dict], out_dir: Path) -> list[tuple[str, str]]:
    """One PNG per metric that has at least two logged steps; returns (title, file name) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for key, title in CURVES:
        points = [(r["step"], r[key]) for r in rows if r.get("step") is not None and isinstance(r.get(key), (int, float))]
        if len(points) < 2:
            continue
        steps, values = zip(*points)
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        ax.plot(steps, values, marker="o", markersize=2, linewidth=1.2)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_title(f"{stage}: {title}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"{stage}_{key.replace('/', '_')}.png"
        fig.savefig(out_dir / name)
        plt.close(fig)
        made.append((f"{stage}: {title}", name))
    return made


def _summary_rows(metrics: dict) -> list[str]:
    wanted = ("docs_in", "docs_out", "chars_out", "vocab_size", "train_mb_per_s", "eval_loss", "perplexity",
              "bits_per_byte", "train_loss", "train_runtime", "train_tokens_per_second", "prompts", "completions")
    return [f"| {k} | {metrics[k]:.4g} |" if isinstance(metrics[k], float) else f"| {k} | {metrics[k]} |"
            for k in wanted if k in metrics]


def build_report(run_dir: Path, manifests: dict[str, dict]) -> Path:
    run_dir = Path(run_dir)
    plots_dir = run_dir / "report_plots"
    plots_dir.mkdir(exist_ok=True)
    lines = [f"# Run report: {run_dir.name}", ""]
    lines += ["| stage | plugin | seconds | artifact |", "|---|---|---|---|"]
    for stage, manifest in manifests.items():
        lines.append(f"| {stage} | {manifest.get('plugin', manifest.get('implementation'))} | "
                     f"{manifest.get('seconds', 0):.1f} | `{stage}/` |")
    for stage, manifest in manifests.items():
        artifact = run_dir / stage
        lines += ["", f"## {stage}", ""]
        rows = _summary_rows(manifest.get("metrics", {}))
        if rows:
            lines += ["| metric | value |", "|---|---|", *rows, ""]
        cleaning = artifact / "report.json"
        if cleaning.is_file():
            report = json.loads(cleaning.read_text())
            kept = (f"Kept {report['docs_out']} of {report['docs_in']} documents "
                    f"({report['chars_out']} of {report['chars_in']} characters).")
            lines += [kept, ""]
            if report.get("removed"):
                lines += ["| removed by | documents |", "|---|---|"]
                lines += [f"| {reason} | {count} |" for reason, count in sorted(report["removed"].items())]
                lines.append("")
        for title, name in plot_curves(stage, read_metrics(artifact), plots_dir):
            lines += [f"![{title}](report_plots/{name})", ""]
        completions = artifact / "completions.jsonl"
        if completions.is_file():
            samples = [json.loads(x) for x in completions.read_text().splitlines()[:4]]
            for sample in samples:
                prompt = sample["prompt"][-1]["content"] if isinstance(sample["prompt"], list) else sample["prompt"]
                lines += [f"> **prompt:** {prompt[:200]}", ">", f"> **completion:** {sample['completion'][:300]}", ""]
    markdown = "\n".join(lines) + "\n"
    (run_dir / "report.md").write_text(markdown)
    (run_dir / "report.html").write_text(markdown_to_html(markdown, run_dir.name))
    return run_dir / "report.md"


def markdown_to_html(markdown: str, title: str) -> str:
    """Just enough markdown (headings, tables, images, quotes, paragraphs) for the report's own output."""
    out, table = [], []

    def flush_table():
        if table:
            cells = [[c.strip() for c in row.strip("|").split("|")] for row in table if not set(row) <= set("|-")]
            head, *body = cells
            out.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>" +
                       "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body) +
                       "</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            out.append(f'<img alt="{html.escape(alt)}" src="{html.escape(src.rstrip(")"))}">')
        elif line.startswith(">"):
            out.append(f"<blockquote>{html.escape(line.lstrip('> '))}</blockquote>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    flush_table()
    style = "body{font-family:sans-serif;max-width:900px;margin:auto}table{border-collapse:collapse}" \
            "td,th{border:1px solid #ccc;padding:2px 8px}img{max-width:100%}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(out)}</body></html>\n")


@hookimpl
def lmforge_pipeline_end(run_dir, manifests, context):
    if not context.is_main_process or not (context.config.get("run") or {}).get("report", True) or not manifests:
        return
    path = build_report(run_dir, manifests)
    if not context.quiet:
        import sys

        print(f"lmforge: report: {path}", file=sys.stderr)
