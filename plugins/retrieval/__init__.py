"""Retrieval when the model is unsure: ``retriever`` plugins and the uncertainty-triggered generation loop.

- retrievers.py: ``bm25`` (a local index over a document collection) and ``http`` (a search service the user
  configures) — the ``retriever`` plugin kind, ``search(query, k) -> list[Passage]``.
- when_unsure.py: the uncertainty signal, the trigger, the context template and the per-completion record,
  used by the sampler (``sampler.retrieval={...}``), ``lmforge chat --retrieve`` and ``lmforge serve --retrieve``.
- context_qa.py: SFT data that teaches a small model to answer from passages in its context, and the measurement
  (accuracy with and without retrieval; how often retrieval fires on questions the model already knows).
"""

from lmforge import hookimpl


@hookimpl
def lmforge_register(registry):
    registry.add("retriever", "bm25", "lmforge.plugins.retrieval.retrievers:BM25Retriever")
    registry.add("retriever", "http", "lmforge.plugins.retrieval.retrievers:HTTPRetriever")


@hookimpl
def lmforge_cli_commands():
    return {"context-qa": (("write the context-QA set: documents to retrieve from and SFT data that teaches "
                            "answering from passages"), "lmforge.plugins.retrieval.context_qa:context_qa_main")}
