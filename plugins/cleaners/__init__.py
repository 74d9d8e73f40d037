"""Cleaner plugins: the cleaner stage and the cleaning steps it composes."""

from lmforge import hookimpl


@hookimpl
def lmforge_register(registry):
    registry.add("cleaner", "basic", "lmforge.plugins.cleaners.basic:BasicCleaner")
    registry.add("cleaning_step", "normalize", "lmforge.plugins.cleaners.basic:Normalize")
    registry.add("cleaning_step", "exact_dedup", "lmforge.plugins.cleaners.basic:ExactDedup")
    registry.add("cleaning_step", "quality", "lmforge.plugins.cleaners.basic:Quality")
