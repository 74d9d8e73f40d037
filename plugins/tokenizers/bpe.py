"""Byte-level BPE tokenizer (GPT-4-style pre-tokenization) with chat special tokens and a chat template.

Why byte-level BPE: every string round-trips (no unknown characters), and it is what today's base models
use. Training streams batches of text through HF ``tokenizers``; the output is a plain tokenizer
directory that ``AutoTokenizer.from_pretrained`` loads with no lmforge import.

The chat template marks each assistant reply with ``{% generation %}`` so TRL can compute assistant-only
loss, and puts the end-of-turn token inside that span so the model learns to stop.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmforge import Tokenizer

from ..common import iter_texts

# GPT-4 (cl100k) pre-tokenization pattern: contractions, letters, 1-3 digit numbers, punctuation, spaces.
GPT4_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@dataclass
class BPEConfig:
    vocab_size: int = 2048
    min_frequency: int = 2
    max_length: int = 1024  # model_max_length saved with the tokenizer
    bos_token: str = "<|bos|>"
    eos_token: str = "<|eos|>"
    pad_token: str = "<|pad|>"
    unk_token: str = "<|unk|>"
    chat_tokens: list[str] = field(default_factory=lambda: ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"])
    extra_special_tokens: list[str] = field(default_factory=list)
    text_field: str = "text"


class ByteLevelBPE(Tokenizer):
    """Trains byte-level BPE on the text input and saves a chat-ready tokenizer directory."""

    config_class = BPEConfig

    def run(self, inputs, output_dir, context):
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, processors, trainers
        from transformers import PreTrainedTokenizerFast

        cfg = self.config
        specials = [cfg.pad_token, cfg.bos_token, cfg.eos_token, cfg.unk_token, *cfg.chat_tokens,
                    *cfg.extra_special_tokens]
        tokenizer = HFTokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(pattern=_regex(GPT4_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                      special_tokens=specials, show_progress=not context.quiet,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        seen_bytes = 0

        def batches():
            nonlocal seen_bytes
            for batch in iter_texts(inputs["text"], cfg.text_field):
                seen_bytes += sum(len(t.encode("utf-8")) for t in batch)
                yield batch

        started = time.time()
        tokenizer.train_from_iterator(batches(), trainer=trainer)
        seconds = time.time() - started
        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        hf = PreTrainedTokenizerFast(
            tokenizer_object=tokenizer, bos_token=cfg.bos_token, eos_token=cfg.eos_token,
            pad_token=cfg.pad_token, unk_token=cfg.unk_token,
            additional_special_tokens=[*cfg.chat_tokens, *cfg.extra_special_tokens],
            model_max_length=cfg.max_length,
        )
        hf.chat_template = CHAT_TEMPLATE
        hf.save_pretrained(str(output_dir))
        stats = {"vocab_size": len(hf), "train_bytes": seen_bytes, "train_seconds": round(seconds, 3),
                 "train_mb_per_s": round(seen_bytes / 1e6 / max(seconds, 1e-9), 3)}
        (Path(output_dir) / "tokenizer_report.json").write_text(json.dumps(stats, indent=2))
        context.log_metrics(stats)
        return output_dir


def _regex(pattern: str):
    from tokenizers import Regex

    return Regex(pattern)
