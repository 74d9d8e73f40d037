"""lmforge's built-in plugins, one package per stage kind.

Each package registers its implementations through the ``lmforge`` entry point group and the
``lmforge_register`` hook, exactly as a third-party plugin would (see pyproject.toml).
"""
