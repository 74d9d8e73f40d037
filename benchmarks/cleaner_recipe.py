"""What each of the `standard` recipe's departures from datatrove's defaults keeps of the bundled sample.

    python benchmarks/cleaner_recipe.py

Runs `pipeline=clean_only` on the bundled raw text with the recipe as shipped, with each of its four departures
(docs/stages/cleaner.md, "Where `standard` departs from datatrove's code") set back to datatrove's default, and
with all four set back; counts the documents kept per source (C4, Wikipedia, the fact paragraphs) and writes
them to benchmarks/results/cleaner_recipe_<date>.json.
"""

from __future__ import annotations

import collections
import copy
import tempfile
from pathlib import Path

import lmforge
import pyarrow.parquet as pq
from _results import Recorder
from omegaconf import OmegaConf

# step name -> (option, datatrove's default)
DEPARTURES = {
    "gopher_quality": [("alpha_ratio_skip_punctuation", False)],
    "c4_quality": [("min_num_sentences", 5)],
    "fineweb_quality": [("look_through_closing_marks", False), ("char_duplicates_ratio", 0.01)],
}


def variants(steps: list) -> dict[str, list]:
    """The recipe, each departure reverted alone, and all reverted."""
    out = {"recipe": steps}
    everything = copy.deepcopy(steps)
    for step_name, options in DEPARTURES.items():
        for option, default in options:
            one = copy.deepcopy(steps)
            for chosen in (one, everything):
                for step in chosen:
                    if isinstance(step, dict) and step.get("name") == step_name:
                        step[option] = default
            out[f"{step_name}.{option}={default}"] = one
    out["all four reverted"] = everything
    return out


def kept(steps: list, where: Path) -> dict[str, int]:
    cfg = lmforge.compose(["pipeline=clean_only", f"run.root={where}", "run.name=recipe"])
    cfg.cleaner.steps = OmegaConf.create(steps)
    result = lmforge.run(cfg)
    sources = collections.Counter()
    for shard in sorted(Path(result.artifacts["cleaner"]).glob("*.parquet")):
        sources.update(pq.read_table(shard, columns=["source"]).column("source").to_pylist())
    return {"kept": sum(sources.values()), **dict(sorted(sources.items()))}


def main() -> None:
    recorder = Recorder("cleaner_recipe", packages=("lmforge", "datatrove", "trafilatura"))
    base = OmegaConf.to_container(lmforge.compose(["pipeline=clean_only"]).cleaner.steps)
    raw = lmforge.compose([]).data.raw_text
    results = {}
    for label, steps in variants(base).items():
        with tempfile.TemporaryDirectory() as where:
            results[label] = kept(steps, Path(where))
        print(f"{label}: {results[label]}")
    recorder.write({"raw_text": str(raw), "departures": DEPARTURES}, results)


if __name__ == "__main__":
    main()
