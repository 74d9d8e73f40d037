"""Run lmforge's cleaning steps on datatrove's executors (local, Slurm, Ray) for cluster-scale cleaning.

Why an adapter rather than our own cluster runner: datatrove already schedules tasks on Slurm/Ray, reads
and writes sharded data on any fsspec filesystem, and resumes failed tasks; what it lacks is only our
(faster) rules. ``LmforgeSteps`` is a datatrove ``PipelineStep`` that applies an ordered list of lmforge
cleaning steps to each document (drops are counted in datatrove's stats as ``dropped_<step>:<reason>``;
annotations go to ``doc.metadata``)::

    from datatrove.executor import LocalPipelineExecutor     # or SlurmPipelineExecutor / RayPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from lmforge.plugins.cleaners.engines import LmforgeSteps, minhash_stages

    LocalPipelineExecutor(pipeline=[JsonlReader("raw/"), LmforgeSteps(["normalize", "gopher_quality"]),
                                    JsonlWriter("filtered/")], tasks=4, workers=4).run()

Deduplication is global, so at cluster scale it must not run inside one task: ``minhash_stages`` returns
datatrove's four MinHash stages configured like our ``minhash_dedup`` step (same n-grams, bands and seed; the
hashing is datatrove's, so the documents they keep are not checked against ours), to run as separate
executor stages. ``lmforge run`` itself runs the cleaner on an executor with ``cleaner.executor``
(executors.py), keeping exactly the in-process documents.

datatrove is an optional extra (``pip install 'lmforge[datatrove]'``); this module imports it lazily.
"""

from __future__ import annotations

from typing import Any


def LmforgeSteps(step_specs: list[Any]):
    """A datatrove PipelineStep running lmforge cleaning steps (names or {name: …, params…})."""
    from datatrove.pipeline.base import PipelineStep
    from datatrove.utils.typeshelper import StatHints
    from lmforge import Drop
    from lmforge.plugins.cleaners.basic import build_steps

    class _LmforgeSteps(PipelineStep):
        name = "lmforge cleaning steps"
        type = "🧹 - CLEAN"

        def __init__(self, specs):
            super().__init__()
            self.specs = list(specs)
            build_steps(self.specs)  # fail now, not inside a remote task, on a bad step config

        def run(self, data, rank: int = 0, world_size: int = 1):
            steps = build_steps(self.specs)
            names = [getattr(s, "name", "") or type(s).__name__ for s in steps]
            for doc in data:
                self.stat_update(StatHints.total)
                text = doc.text
                with self.track_time():
                    for name, step in zip(names, steps):
                        result = step.process(text)
                        if result is None or isinstance(result, Drop):
                            self.stat_update(f"dropped_{name}:{result.reason if result else 'dropped'}")
                            text = None
                            break
                        if isinstance(result, tuple):
                            result, annotations = result
                            doc.metadata.update(annotations)
                        text = result
                if text is None:
                    continue
                doc.text = text
                self.stat_update(StatHints.forwarded)
                yield doc

    return _LmforgeSteps(step_specs)


def minhash_stages(signatures_dir: str, buckets_dir: str, clusters_dir: str, n_grams: int = 5,
                   num_buckets: int = 14, hashes_per_bucket: int = 8, seed: int = 1) -> list:
    """datatrove's MinHash signature/buckets/cluster stages with our ``minhash_dedup`` settings.

    Returns [signature, buckets, cluster] steps; append a reader + ``MinhashDedupFilter(clusters_dir)`` as
    the fourth stage (see datatrove's examples/minhash_deduplication.py for the executor wiring)."""
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupSignature,
    )
    from datatrove.utils.hashing import HashConfig

    config = MinhashConfig(n_grams=n_grams, num_buckets=num_buckets, hashes_per_bucket=hashes_per_bucket,
                           seed=seed, hash_config=HashConfig(precision=64, hash_fc="xxhash"))
    return [MinhashDedupSignature(output_folder=signatures_dir, config=config),
            MinhashDedupBuckets(input_folder=signatures_dir, output_folder=buckets_dir, config=config),
            MinhashDedupCluster(input_folder=buckets_dir, output_folder=clusters_dir, config=config)]
