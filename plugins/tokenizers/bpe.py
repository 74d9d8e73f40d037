"""Byte-level BPE tokenizer (GPT-4-style pre-tokenization) with chat special tokens and a chat template.

Why byte-level BPE: every string round-trips (no unknown characters), and it is what today's base models
use. Training streams batches of text through HF ``tokenizers``; the output is a plain tokenizer
directory that ``AutoTokenizer.from_pretrained`` loads with no lmforge import. Special tokens, the chat
template (``{% generation %}`` markers with the end-of-turn token inside, so TRL can compute assistant-only
loss and the model learns to stop), held-out evaluation and the report are shared with the other subword
plugins in ``subword.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmforge.errors import ConfigError
from lmforge.plugins.tokenizers.subword import SubwordConfig, SubwordTokenizer

# GPT-4 (cl100k) pre-tokenization pattern: contractions, letters, 1-3 digit numbers, punctuation, spaces.
GPT4_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# GPT-2 pattern, for comparison with older models.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PATTERNS = {"gpt4": GPT4_PATTERN, "gpt2": GPT2_PATTERN}

# The template without content escaping, for tokenizers that lack the unescaping normalizer (see subword.py).
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
class BPEConfig(SubwordConfig):
    min_frequency: int = 2  # a pair seen fewer times is never merged
    pattern: str = "gpt4"  # pre-tokenization regex: gpt4, gpt2, or a regex of your own


class ByteLevelBPE(SubwordTokenizer):
    """Trains byte-level BPE on the text input and saves a chat-ready tokenizer directory."""

    config_class = BPEConfig
    algorithm = "bpe"

    def build(self, specials, context):
        from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
        from tokenizers import Tokenizer as HFTokenizer

        pattern = PATTERNS.get(self.config.pattern, self.config.pattern)
        try:
            split = pre_tokenizers.Split(pattern=Regex(pattern), behavior="isolated")
        except Exception as exc:  # noqa: BLE001 -- tokenizers raises a bare Exception for a bad regex
            raise ConfigError(f"tokenizer.pattern: not gpt4, gpt2 or a valid regex ({exc})") from None
        tokenizer = HFTokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=self.config.vocab_size, min_frequency=self.config.min_frequency,
                                      special_tokens=specials, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        return tokenizer, trainer

    def finish(self, tokenizer):
        from tokenizers import processors

        tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
        return tokenizer

    def token_bytes(self, token: str) -> int:
        return len(token)  # byte-level: one character of the token per byte

