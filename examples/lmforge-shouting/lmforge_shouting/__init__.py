"""An example third-party lmforge plugin: one cleaning step, one config option, one entry point.

After ``pip install``, ``lmforge run cleaner=shouting`` selects the option this package ships in
``conf/cleaner/shouting.yaml`` -- lmforge's own code is not touched.
"""

from dataclasses import dataclass

import lmforge


@dataclass
class ShoutConfig:
    min_chars: int = 1


class Shout(lmforge.CleaningStep):
    """Upper-cases every document of at least ``min_chars`` characters."""

    name = "shout"
    config_class = ShoutConfig

    def process(self, text):
        return text.upper() if len(text) >= self.config.min_chars else text


@lmforge.hookimpl
def lmforge_register(registry):
    registry.add("cleaning_step", "shout", Shout)


@lmforge.hookimpl
def lmforge_config_searchpath():
    return ["pkg://lmforge_shouting.conf"]
