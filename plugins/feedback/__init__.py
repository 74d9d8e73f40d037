"""Human feedback and self-knowledge: ranking sampled responses, and "I don't know" data."""

from lmforge import hookimpl


@hookimpl
def lmforge_register(registry):
    pass
