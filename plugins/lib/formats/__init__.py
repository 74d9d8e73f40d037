"""Data formats: how SFT, preference and prompt records in the wild become chat messages.

Users bring alpaca (instruction/input/output), ShareGPT (conversations of from/value), OpenAI
``messages``, ``prompt``/``completion`` and whole dialogues in one string
("\\n\\nHuman: … \\n\\nAssistant: …", as in HH-RLHF). Each is a ``data_format`` plugin; stages call
:func:`load_conversations`, :func:`load_preferences`, :func:`load_prompts` or
:func:`load_prompt_completions`, which auto-detect the format (or take it by name) and name the file
and record index of anything malformed.

Auto-detection keeps the formats that fit each of the file's first :data:`DETECT_SAMPLE` records; anything
but exactly one is a one-line error that names the file and record and asks for ``format=``. Files whose keys
differ from a format's (``question``/``answer``, say) are read with a ``columns`` map that
renames keys before detection: ``{"question": "prompt", "answer": "completion"}``.

The modules: ``base`` (the ``DataFormat`` class and message helpers), ``builtin`` (the five formats),
``detection`` (which format a file holds), ``loaders`` (what stages call); every public name is here too.
"""

from lmforge import hookimpl
from lmforge.plugins.lib.formats.base import ROLE_ALIASES, DataFormat, Messages
from lmforge.plugins.lib.formats.builtin import (
    BUILTIN_FORMATS,
    AlpacaFormat,
    DialogueFormat,
    MessagesFormat,
    PromptCompletionFormat,
    ShareGPTFormat,
)
from lmforge.plugins.lib.formats.detection import DETECT_SAMPLE, detect_format, read_format
from lmforge.plugins.lib.formats.loaders import (
    PLACEHOLDER,
    load_conversations,
    load_preferences,
    load_prompt_completions,
    load_prompts,
    personalise,
    preferences_for,
)

__all__ = ["BUILTIN_FORMATS", "DETECT_SAMPLE", "PLACEHOLDER", "ROLE_ALIASES", "AlpacaFormat", "DataFormat",
           "DialogueFormat", "Messages", "MessagesFormat", "PromptCompletionFormat", "ShareGPTFormat",
           "detect_format", "load_conversations", "load_preferences", "load_prompt_completions", "load_prompts",
           "personalise", "preferences_for", "read_format"]


@hookimpl
def lmforge_register(registry):
    for cls in BUILTIN_FORMATS:
        registry.add("data_format", cls.name, cls)
