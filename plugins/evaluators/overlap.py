"""The overlap check made when a run is planned: are the held-out items of each evaluator in the data the
model trained on?

A number measured on prompts the model was trained on measures recall, not generalisation. So before any
stage runs, for every stage with evaluators that read items (``answers`` and ``win_rate``: their held-out
prompts; ``gsm8k``: its questions; ``reward_accuracy``: its pairs' prompts; ``perplexity``: its held-out
documents; a third-party evaluator with a ``held_out_items()`` method), each item is compared with every
text of the training inputs of that stage and of every earlier stage whose artifact reaches it (the
``stage:<name>`` wiring, followed back: raw text, SFT chats, preference prompts and pairs): *exact* when a
training text equals the item after normalisation (case, punctuation, whitespace, and arithmetic in one
order: "What is 3 + 1?" is "What is 1 + 3?"), *ngram* when a training text holds one of the item's 13-word
n-grams, or the whole item when it is shorter (``lmforge.plugins.lib.overlap``, shared with the
``decontaminate`` cleaning step). ``lm_eval`` tasks are not checked (their items come from the harness).

Inputs made by an earlier stage of the run (``stage:…``) are not read (they do not exist yet); the inputs
they were made from are. Web pages (.html/.warc) are not read either: extracting them is the cleaner's work;
nor are directories of token shards (``pipeline=pretrain_shards``): they hold token ids, not text.

``evaluation.on_overlap``: ``warn`` (default: one line on stderr per stage), ``error`` (one line naming the
stage, the evaluator and an overlapping item; the run stops before any stage runs) or ``off``. The result
goes into the stage's ``eval.json`` (``overlap``: items — distinct after normalisation —, the texts they came
from, overlapping, examples) and its manifest metrics
(``eval/overlap/items``, ``eval/overlap/overlapping``); the report's section (:func:`report_section`) says
"overlap with training data: N of M" per stage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lmforge import registry
from lmforge.config import sample_data_path
from lmforge.errors import ConfigError, DataError
from lmforge.plugins.lib.data import BadRecord, iter_rows, iter_texts, read_records
from lmforge.plugins.lib.overlap import OverlapIndex, string_leaves
from lmforge.sources import WEB_SUFFIXES, input_kind, resolve_data, suffix_of

ON_OVERLAP = ("warn", "error", "off")
SETTINGS = ("on_overlap", "overlap_max_mb")  # keys of `evaluation` that are settings, not stage names
NGRAM = 13
MAX_MB = 64  # text read per training input (a pretraining corpus is checked in part; the rest by decontaminate)
EXAMPLES = 5
SNIPPET = 160
STAGE_REF = "stage:"


def evaluation_items(evaluator) -> list[str] | None:
    """The texts an evaluator asks or scores, or None when it reads none this check can see."""
    name, cfg = evaluator.name, evaluator.config
    if callable(getattr(evaluator, "held_out_items", None)):
        return list(evaluator.held_out_items())
    if _refs([getattr(cfg, key, None) for key in ("prompts", "data", "text")]):
        return None  # made by a stage of this run: not there yet
    if name in ("answers", "win_rate"):
        from lmforge.plugins.evaluators.stage_effects import load_eval_prompts  # it imports this package

        prompts = load_eval_prompts(cfg.prompts or sample_data_path("prompts.jsonl"))[: cfg.limit]
        # trained behaviours (identity, small talk: `held_out: false`) are asked on purpose, not held out
        return [p["messages"][-1]["content"] for p in prompts if p.get("held_out", True)]
    if name == "gsm8k":
        return [str(r.get("question", "")) for r in read_records(cfg.data)[: cfg.limit]]
    if name == "reward_accuracy":
        from lmforge.plugins.lib.formats import load_preferences

        pairs = load_preferences(cfg.data)[: cfg.limit]
        return [next((m["content"] for m in reversed(p["prompt"]) if m["role"] == "user"), "") for p in pairs]
    if name == "perplexity":
        return [t for batch in iter_texts(cfg.text, cfg.text_field) for t in batch][: cfg.max_documents]
    return None


def _refs(value) -> list[str]:
    """The stage names a wiring value refers to (``stage:<name>[/file]``, inside lists and ``path`` too)."""
    if isinstance(value, list):
        return [ref for item in value for ref in _refs(item)]
    if isinstance(value, dict):
        return _refs(value.get("path"))
    if isinstance(value, str) and value.startswith(STAGE_REF):
        return [value[len(STAGE_REF):].split("/", 1)[0]]
    return []


def lineage(stage_name: str, stages: dict[str, Any]) -> list[str]:
    """The stage and every stage whose artifact reaches it through the wiring, in pipeline order."""
    reached, todo = {stage_name}, [stage_name]
    while todo:
        for value in (stages.get(todo.pop()) or {}).values():
            for ref in _refs(value):
                if ref in stages and ref not in reached:
                    reached.add(ref)
                    todo.append(ref)
    return [name for name in stages if name in reached]


def training_inputs(stage_name: str, config: dict[str, Any]) -> list[tuple[str, Any]]:
    """(config key, value) of every data input of the stage that exists before the run (no models, no
    tokenizers, no earlier stage's artifact)."""
    node = config.get(stage_name) or {}
    wiring = ((config.get("pipeline") or {}).get("stages") or {}).get(stage_name) or {}
    try:
        cls = registry().get(node.get("kind", stage_name), node["plugin"])
    except (KeyError, ConfigError):
        cls = None
    found = []
    for key, value in wiring.items():
        if value in (None, "", []) or input_kind(cls, key) in ("model", "tokenizer"):
            continue
        values = value if isinstance(value, list) else [value]
        values = [v for v in values if not _refs(v)]
        if values:
            found.append((f"pipeline.stages.{stage_name}.{key}", values if isinstance(value, list) else values[0]))
    return found


def _unread(value) -> str | None:
    """Why this check does not read a training input ("web pages": the cleaner extracts them; "token shards":
    token ids, not text), "" when it does, None when it is not data (a path input of another kind)."""
    try:
        source = resolve_data(value)
    except Exception:  # noqa: BLE001 - not a data source (a path input of another kind): not training text
        return None
    if any(part.kind == "tokens" for part in source.parts):
        return "token shards"
    return "web pages" if any(suffix_of(f) in WEB_SUFFIXES for f in source.files()) else ""


def _snippet(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET else text[: SNIPPET - 1] + "…"


def check_overlap(config: dict[str, Any], n: int = NGRAM, max_mb: float = MAX_MB) -> dict[str, dict[str, Any]]:
    """For each stage with evaluators that read items: its items against its training inputs (see the module
    docstring), reading at most ``max_mb`` MB of text per input. ``{stage: {"items", "overlapping", "exact",
    "ngram", "examples", "evaluators", "inputs", "partly_read", "unchecked", "not_read"}}``; stages without such evaluators
    are left out."""
    from lmforge.plugins.evaluators import evaluators_for  # the package imports this module

    stages = (config.get("pipeline") or {}).get("stages") or {}
    index = OverlapIndex(n, commutative=True)
    by_text: dict[str, int] = {}  # normalised item -> index item
    asked: dict[str, dict[str, list[int]]] = {}  # stage -> evaluator -> items
    asked_texts: dict[str, set[str]] = {}  # stage -> its evaluators' texts as given (before normalisation)
    unchecked: dict[str, list[str]] = {}
    for stage_name in stages:
        for evaluator in evaluators_for(stage_name, config):
            texts = evaluation_items(evaluator)
            if texts is None:
                unchecked.setdefault(stage_name, []).append(evaluator.name)
                continue
            items = asked.setdefault(stage_name, {}).setdefault(evaluator.name, [])
            for text in texts:
                key = " ".join(index.words(text))
                if key:
                    asked_texts.setdefault(stage_name, set()).add(text)
                if key and key not in by_text:
                    by_text[key] = index.add(text, text)
                if key and by_text[key] not in items:
                    items.append(by_text[key])
    if not asked:
        return {}
    # each training input read once: input -> item -> (match, where, training text)
    hits: dict[str, dict[int, tuple[str, ...]]] = {}
    inputs_of: dict[str, list[str]] = {}
    partial: set[str] = set()  # inputs read only in part
    partly_read: set[str] = set()  # their config keys
    unread: dict[str, str] = {}  # inputs not read -> why
    not_read: dict[str, dict[str, str]] = {}  # stage -> config key -> why
    for stage_name in asked:
        keys = []
        for earlier in lineage(stage_name, stages):
            if earlier == stage_name and (config.get(earlier) or {}).get("kind", earlier) == "sampler":
                continue  # a sampler is asked its prompts, it does not train on them (earlier ones make data)
            for where, value in training_inputs(earlier, config):
                ident = json.dumps(value, sort_keys=True, default=str)
                if ident not in hits:
                    why = _unread(value)
                    hits[ident], complete = _scan(index, value, int(max_mb * 1e6)) if why == "" else ({}, True)
                    if not complete:
                        partial.add(ident)
                    if why:
                        unread[ident] = why
                if ident in unread:
                    not_read.setdefault(stage_name, {})[where] = unread[ident]
                keys.append(ident)
                if ident in partial:
                    partly_read.add(where)
                inputs_of.setdefault(stage_name, []).append(where)
        merged: dict[int, tuple[str, ...]] = {}
        for ident in keys:
            for item, hit in hits[ident].items():
                if item not in merged or (hit[0] == "exact" and merged[item][0] != "exact"):
                    merged[item] = hit
        hits[f"stage:{stage_name}"] = merged
    results = {}
    for stage_name, evaluators in asked.items():
        merged = hits[f"stage:{stage_name}"]
        items = sorted({i for found in evaluators.values() for i in found})
        overlapping = [i for i in items if i in merged]
        first_evaluator = {i: name for name, found in reversed(evaluators.items()) for i in found}
        results[stage_name] = {
            "items": len(items), "overlapping": len(overlapping),
            "texts": len(asked_texts.get(stage_name, ())),  # items count texts equal after normalisation once
            "exact": sum(merged[i][0] == "exact" for i in overlapping),
            "ngram": sum(merged[i][0] == "ngram" for i in overlapping),
            "examples": [{"evaluator": first_evaluator[i], "item": index.labels[i], "match": merged[i][0],
                          "phrase": merged[i][3], "where": merged[i][1], "training_text": merged[i][2]}
                         for i in overlapping[:EXAMPLES]],
            "evaluators": {name: {"items": len(found), "overlapping": sum(i in merged for i in found)}
                           for name, found in evaluators.items()},
            "inputs": sorted(set(inputs_of.get(stage_name, []))),
            "partly_read": sorted(set(inputs_of.get(stage_name, [])) & partly_read),  # their first max_mb MB
            "unchecked": unchecked.get(stage_name, []),
            "not_read": not_read.get(stage_name, {}),  # config key -> why (web pages, token shards)
            "ngram_words": n,
        }
    return results


def _scan(index: OverlapIndex, value, max_chars: int) -> tuple[dict[int, tuple[str, ...]], bool]:
    """(item -> (match, where, training text, phrase) for every item some text of a data input holds,
    whether the whole input was read (not only its first ``max_chars`` characters))."""
    found: dict[int, tuple[str, ...]] = {}
    read = 0
    for row in iter_rows(value, txt_mode="chunk"):
        if isinstance(row, BadRecord):  # the stage reports its own bad records
            continue
        if read >= max_chars:
            return found, False
        for text in string_leaves(row.fields):
            read += len(text)
            for item, (match, phrase) in index.matches(text).items():
                if item not in found or (match == "exact" and found[item][0] != "exact"):
                    found[item] = (match, row.where, _snippet(text), phrase)
    return found, True


_PLANNED: tuple[Any, dict] | None = None  # (the run's config, its results): read when each stage is sealed


def on_overlap(config: dict[str, Any]) -> str:
    value = (config.get("evaluation") or {}).get("on_overlap", "warn")
    if value not in ON_OVERLAP:
        raise ConfigError(f"evaluation.on_overlap: '{value}' is not one of {', '.join(ON_OVERLAP)}")
    return value


def _line(stage_name: str, result: dict[str, Any]) -> str:
    example = result["examples"][0]
    found = (f"= {example['where']}: {json.dumps(example['training_text'])} (after normalisation)"
             if example["match"] == "exact" else
             f"in {example['where']}, which holds {json.dumps(example['phrase'])}")
    return (f"evaluation.{stage_name}: {result['overlapping']} of {result['items']} held-out items are in the "
            f"stage's training data, e.g. {example['evaluator']}: {json.dumps(example['item'])} {found}")


def check_run(config: dict[str, Any], is_main_process: bool = True) -> dict[str, dict[str, Any]]:
    """The plan-time check of a pipeline: results kept for the stages' manifests; a warning line per stage
    with overlap, or (``evaluation.on_overlap=error``) a DataError naming the first one."""
    global _PLANNED
    mode = on_overlap(config)
    max_mb = (config.get("evaluation") or {}).get("overlap_max_mb", MAX_MB)
    if isinstance(max_mb, bool) or not isinstance(max_mb, (int, float)) or max_mb <= 0:
        raise ConfigError(f"evaluation.overlap_max_mb: expected a number of MB > 0, got {max_mb!r}")
    results = {} if mode == "off" else check_overlap(config, max_mb=max_mb)
    _PLANNED = (config, results)
    for stage_name, result in results.items():
        if not result["overlapping"]:
            continue
        if mode == "error":
            raise DataError(f"{_line(stage_name, result)} (evaluation.on_overlap=error)")
        if is_main_process:
            print(f"lmforge: warning: {_line(stage_name, result)}", file=sys.stderr)
    return results


def planned(stage_name: str, config: Any) -> dict[str, Any] | None:
    """The check's result for a stage of the run whose config this is (None outside a planned run)."""
    if _PLANNED is None or _PLANNED[0] is not config:
        return None
    return _PLANNED[1].get(stage_name)


def record(stage_name: str, context, results: dict[str, Any]) -> None:
    """Put a stage's result in its eval.json (``results``) and manifest metrics."""
    found = planned(stage_name, getattr(context, "config", None))
    if found is None:
        return
    results["overlap"] = found
    context.log_metrics({"eval/overlap/items": found["items"], "eval/overlap/overlapping": found["overlapping"]})


def report_section(run_dir, manifests: dict[str, dict[str, Any]]) -> str | None:
    """The run report's lines on the check: per stage "overlap with training data: N of M", and an example."""
    lines = []
    for stage_name, manifest in manifests.items():
        metrics = manifest.get("metrics") or {}
        if "eval/overlap/items" not in metrics:
            continue
        items = int(metrics["eval/overlap/items"])
        try:
            found = json.loads((Path(run_dir) / stage_name / "eval.json").read_text())["overlap"]
        except (OSError, ValueError, KeyError, TypeError):
            found = {}
        texts = found.get("texts")  # absent in runs made before it was recorded
        # items are distinct after normalisation ("What is 7 + 3?" and "What is 3 plus 7?" are one): say so
        # when the evaluators asked more texts than that, so "0 of 46" beside "52 prompts" is no riddle
        what = "held-out items"
        if texts != items:
            source = f"from {texts} held-out texts; " if isinstance(texts, int) else ""
            what = (f"distinct held-out items ({source}texts equal after normalisation — case, punctuation, "
                    f"operand order: \"7 + 3\" is \"3 plus 7\" — counted once)")
        line = (f"- **{stage_name}**: overlap with training data: {int(metrics['eval/overlap/overlapping'])} "
                f"of {items} {what}")
        if found.get("examples"):
            example = found["examples"][0]
            line += f", e.g. {json.dumps(example['item'])} ({example['match']}, {Path(example['where']).name})"
        if found.get("not_read"):
            line += "; not compared with " + ", ".join(f"`{key}` ({why})" for key, why in found["not_read"].items())
        if found.get("partly_read"):
            line += "; read in part (`evaluation.overlap_max_mb`): " + ", ".join(f"`{key}`" for key in found["partly_read"])
        lines.append(line)
    if not lines:
        return None
    intro = (f"Held-out items found in the training data that reached each stage (exact after normalisation or by "
             f"{NGRAM}-gram; `eval.json` `overlap` lists examples):")
    return "\n".join(["## Held-out items and the training data", "", intro, "", *lines])
