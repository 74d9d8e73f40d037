"""The ``language_map`` evaluator: the pretrained model's language map beside its random initialisation.

Why an evaluator: the map belongs to the artifact it describes (``pretrainer/language_map.png``), lands in the
report with the stage, and its one number — how much the trained neighbour lists agree with a random model's —
goes to the manifest. The default config enables it on the pretrainer; a character-level vocabulary has no words
to draw, so there it only records ``words: 0``.
"""

from __future__ import annotations

from dataclasses import asdict

from lmforge import Evaluator
from lmforge.plugins.inspect.language_map import LanguageMapConfig, language_map, whole_word_tokens
from lmforge.plugins.pretrainers import shard_input


def sample_text(source, max_chars: int = 2_000_000, tokenizer=None) -> str:
    """The first ``max_chars`` characters of a text input (enough to rank the common words); of a directory of
    token shards, its first tokens decoded with ``tokenizer``."""
    from lmforge.plugins.lib.data import iter_texts

    shards = shard_input.shard_dir(source)
    if shards is not None:
        return shard_input.sample_text(shards, tokenizer)[:max_chars] if tokenizer is not None else ""
    pieces, size = [], 0
    for batch in iter_texts(source):
        for text in batch:
            pieces.append(text)
            size += len(text)
            if size >= max_chars:
                return "\n".join(pieces)
    return "\n".join(pieces)


class LanguageMapEvaluator(Evaluator):
    name = "language_map"
    config_class = LanguageMapConfig

    def evaluate(self, artifact, inputs, context):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(artifact), trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(str(artifact), use_safetensors=True, trust_remote_code=False)
        cfg = LanguageMapConfig(**asdict(self.config))
        if cfg.text is None and inputs.get("text"):  # label the words the model was trained on most
            cfg.text = sample_text(inputs["text"], tokenizer=tokenizer)
        if len(whole_word_tokens(tokenizer, 3)) < 3:  # a character-level vocabulary has no words to draw
            return {"words": 0}
        summary = language_map(model, tokenizer, cfg, artifact, seed=context.seed)
        return {"words": summary["words"],
                "neighbour_overlap_with_random": summary.get("neighbour_overlap_with_random", 0.0)}
