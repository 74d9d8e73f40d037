"""The libraries the built-in plugins share, one module per concern (no plugin registers here).

- ``data``: the one data reader (files of every kind, globs, folders, Hub datasets, mixtures)
- ``mixtures``: the sources of a mixture interleaved, each at its share of every prefix
- ``formats``: chat, preference and prompt records in the wild -> messages (``data_format`` plugins)
- ``models``: opening and saving models and tokenizers (local dirs and Hub ids, safetensors only)
- ``training``: the plumbing every trainer-based stage shares (arguments, resume, LoRA, evaluation)
- ``generation``: text generation for the sampler, chat, serve, evaluators, online RL and retrieval
- ``checkpoints``: finding, writing and resuming from checkpoints
- ``data_checks``: data that cannot teach is refused before training
- ``local_page``: the plumbing of lmforge's local web pages (rank, audit)
- ``overlap``: evaluation items in training text (n-grams after normalisation): decontamination, the held-out check
"""
