"""Looking inside a model: the token view (``lmforge tokenize``) and the language map (``lmforge map``).

- tokens.py: how a tokenizer cuts text, coloured with ids; fertility (tokens per word) for the tokenizer report.
- language_map.py: token embeddings in 2D with nearest neighbours (the ``language_map`` evaluator in
  plugins/evaluators/ draws one into the pretrainer's artifact).
"""

from lmforge import hookimpl


@hookimpl
def lmforge_cli_commands():
    return {
        "tokenize": ("show how a tokenizer cuts text: coloured tokens with their ids",
                     "lmforge.plugins.inspect.tokens:tokenize_main"),
        "map": ("draw a model's token embeddings in 2D (the language map) with nearest neighbours",
                "lmforge.plugins.inspect.language_map:map_main"),
    }
