"""lmforge's built-in plugins — the room map.

The six stages, one package each (a stage kind's implementations side by side):

- ``cleaners/``      raw text and web pages in, clean documents out (rules, dedup, language, PII, audit page;
                     datatrove's executors: local, Ray, Slurm)
- ``tokenizers/``    BPE, unigram, WordPiece, char; chat tokens and the chat template
- ``pretrainers/``   the HF Trainer and the lean accelerate loop; token shards (its own and datatrove's)
- ``finetuners/``    SFT (TRL)
- ``aligners/``      DPO, ORPO, KTO, GRPO, RLOO (TRL), the reward model, PPO; reward functions
- ``samplers/``      batch sampling (``hf_generate``), vLLM, the ``chat`` command

What measures and what goes beyond the pipeline:

- ``evaluators/``    everything that measures a stage's artifact: held-out answers, win rate, perplexity,
                     GSM8K, reward accuracy, the language map, lm-eval; each adds its own report section;
                     held-out items checked against the training data before a run starts
- ``feedback/``      preference data from the model's own answers: judged pairs, self-interrogation, questions
- ``rank/``          ``lmforge rank``: people rank samples in a local page -> preference pairs
- ``serve/``         ``lmforge serve``: an OpenAI-compatible HTTP server
- ``retrieval/``     look it up when unsure: retrievers and retrieval-augmented answers
- ``inspect/``       looking inside: the token view, the language map

Libraries the plugins share (they register nothing): ``lib/`` — data reading, data formats, models,
trainer plumbing, generation, checkpoints, data checks, local pages, evaluation-item overlap.

Hook plugins: ``console/`` (the live display, the closing lines), ``report.py`` (the run report and
``lmforge compare``), ``tracking.py`` (TensorBoard, W&B, Trackio), ``export.py`` (``lmforge export``).

Every package registers through the ``lmforge`` entry point group and the ``lmforge_register`` hook,
exactly as a third-party plugin would (see pyproject.toml).
"""
