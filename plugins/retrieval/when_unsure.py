"""Look it up when unsure: measure the model's uncertainty, retrieve passages when it is high, answer again.

"When a model detects uncertainty, it can trigger a search. The results are inserted into the model's context
window — its working memory." This module is that loop, shared by the sampler, ``lmforge chat`` and
``lmforge serve``:

1. **Signal.** The model starts its answer greedily for ``probe_tokens`` tokens; the signal is the mean entropy
   (nats) of its next-token distributions over those tokens (``entropy``), or one minus the mean probability of
   the token it picked (``top_prob``). A model that knows the answer puts its mass on one continuation; one that
   does not spreads it. Cost: one short greedy generation per prompt, batched.
2. **Trigger.** ``uncertainty > threshold`` fires retrieval (``threshold: 0`` always retrieves, a huge value never).
3. **Context.** The passages go into the last user turn with :data:`CONTEXT_TEMPLATE` — the same layout the
   context-QA SFT data uses (``make_context_qa``), so a model fine-tuned on it knows where to look.
4. **Record.** Every completion carries ``retrieval: {fired, uncertainty, signal, threshold, query, passages}``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmforge.errors import ConfigError, MissingArtifact

CONTEXT_TEMPLATE = "Context:\n{passages}\n\nQuestion: {question}"


@dataclass
class RetrievalConfig:
    retriever: Any = "???"  # a retriever name, or {name: bm25, collection: docs/, …}
    threshold: float = 1.0  # retrieve when the uncertainty signal is above this
    signal: str = "entropy"  # entropy (nats, mean over the probe tokens) | top_prob (1 - mean top probability)
    probe_tokens: int = 4
    k: int = 3  # passages put into the context

    def __post_init__(self):
        if self.signal not in ("entropy", "top_prob"):
            raise ConfigError(f"retrieval.signal: got {self.signal!r}, expected entropy or top_prob")
        if self.probe_tokens < 1 or self.k < 1:
            raise ConfigError("retrieval.probe_tokens and retrieval.k: expected at least 1")


@dataclass
class RetrievalRecord:
    """What happened for one prompt: kept beside the completion."""

    fired: bool
    uncertainty: float
    signal: str
    threshold: float
    query: str = ""
    passages: list[dict] = field(default_factory=list)


def build_retriever(spec):
    """A retriever instance from a name or ``{name: …, params…}`` (params validated like stage params)."""
    from lmforge import registry
    from lmforge.config import build_params, named_spec

    if isinstance(spec, RetrievalConfig):
        spec = spec.retriever
    name, params = named_spec(spec, "retrieval.retriever")
    cls = registry().get("retriever", name)
    return cls(build_params(cls.config_class, params, where="retrieval.retriever", plugin=name))


def question_of(messages: list[dict]) -> str:
    """The text to search for: the last user turn."""
    return next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")


def with_passages(messages: list[dict], passages) -> list[dict]:
    """The conversation with the passages placed in its last user turn (:data:`CONTEXT_TEMPLATE`)."""
    if not passages:
        return messages
    numbered = "\n".join(f"[{i}] {p.text}" for i, p in enumerate(passages, 1))
    last_user = max(i for i, m in enumerate(messages) if m.get("role") == "user")
    updated = dict(messages[last_user], content=CONTEXT_TEMPLATE.format(passages=numbered,
                                                                       question=messages[last_user]["content"]))
    return [*messages[:last_user], updated, *messages[last_user + 1:]]


def uncertainty_scores(model, tokenizer, encoded: list[list[int]], probe_tokens: int, signal: str,
                       eos_ids: list[int], batch_size: int = 8) -> list[float]:
    """The uncertainty signal for each encoded prompt, from a short greedy continuation (batched)."""
    import torch
    from lmforge.plugins.lib.generation import left_padded
    from lmforge.plugins.lib.models import pad_token_id

    pad = pad_token_id(tokenizer)
    scores: list[float] = []
    for start in range(0, len(encoded), batch_size):
        batch = encoded[start:start + batch_size]
        input_ids, attention_mask = left_padded(batch, pad, model.device)
        with torch.no_grad():
            out = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=probe_tokens,
                                 do_sample=False, temperature=None, top_k=None, top_p=None,
                                 output_logits=True, return_dict_in_generate=True, eos_token_id=eos_ids,
                                 pad_token_id=pad)
        logits = torch.stack(out.logits, dim=1).float()  # (batch, steps, vocab)
        probs = torch.softmax(logits, dim=-1)
        per_step = (-(probs * torch.log(probs.clamp_min(1e-12))).sum(-1) if signal == "entropy"
                    else 1.0 - probs.max(-1).values)
        generated = out.sequences[:, input_ids.shape[1]:]
        for row in range(len(batch)):
            # Positions up to and including the first end token count; the padding after it does not.
            tokens = generated[row].tolist()
            end = next((i for i, t in enumerate(tokens) if t in eos_ids), len(tokens) - 1)
            scores.append(float(per_step[row, :end + 1].mean()))
    return scores


def add_context_when_unsure(model, tokenizer, prompts: list[list[dict]], cfg: RetrievalConfig, retriever,
                            system_prompt: str | None, stop_tokens) -> tuple[list[list[dict]], list[RetrievalRecord]]:
    """Prompts with passages added where the model is unsure, and a record per prompt of what was done."""
    from lmforge.plugins.lib.generation import encode_prompt, eos_token_ids, with_system_prompt

    encoded = [encode_prompt(tokenizer, with_system_prompt(p, system_prompt)) for p in prompts]
    scores = uncertainty_scores(model, tokenizer, encoded, cfg.probe_tokens, cfg.signal,
                                eos_token_ids(tokenizer, stop_tokens))
    updated, records = [], []
    for prompt, score in zip(prompts, scores):
        record = RetrievalRecord(fired=score > cfg.threshold, uncertainty=score, signal=cfg.signal,
                                 threshold=cfg.threshold)
        if record.fired:
            record.query = question_of(prompt)
            passages = retriever.search(record.query, cfg.k)
            record.passages = [asdict(p) for p in passages]
            prompt = with_passages(prompt, passages)
        updated.append(prompt)
        records.append(record)
    return updated, records


def sample_when_unsure(model, tokenizer, prompts: list[list[dict]], gen_cfg, cfg: RetrievalConfig, retriever=None,
                       progress: bool = False) -> list[dict]:
    """:func:`hf_generate.sample` with retrieval when unsure; each row gains a ``retrieval`` record.

    Rows keep the user's original prompt in ``prompt`` and the prompt the model actually saw in
    ``prompt_with_context`` when retrieval fired.
    """
    from lmforge.plugins.lib.generation import sample

    retriever = retriever or build_retriever(cfg.retriever)
    augmented, records = add_context_when_unsure(model, tokenizer, prompts, cfg, retriever,
                                                 gen_cfg.system_prompt, gen_cfg.stop_tokens)
    rows = sample(model, tokenizer, augmented, gen_cfg, progress=progress)
    for row in rows:
        record = records[row["index"]]
        if record.fired:
            row["prompt_with_context"] = row["prompt"]
        row["prompt"] = prompts[row["index"]]
        row["retrieval"] = asdict(record)
    return rows


def add_retrieval_arguments(parser) -> None:
    """``--retrieve`` / ``--retrieve-url`` / ``--threshold`` / ``--k`` for ``lmforge chat`` and ``lmforge serve``."""
    parser.add_argument("--retrieve", default=None, metavar="COLLECTION",
                        help="look it up when unsure: a BM25 index over this file/folder/dataset")
    parser.add_argument("--retrieve-url", default=None, metavar="URL",
                        help="look it up when unsure: a JSON search service (GET URL?q=…&k=…)")
    parser.add_argument("--threshold", type=float, default=1.0,
                        help="retrieve when the answer's mean entropy over its first tokens exceeds this (nats)")
    parser.add_argument("--k", type=int, default=3, help="passages added to the context when retrieval fires")


def retrieval_from_args(args) -> RetrievalConfig | None:
    """A RetrievalConfig from those arguments (None when neither ``--retrieve`` nor ``--retrieve-url`` is given)."""
    if not (args.retrieve or args.retrieve_url):
        return None
    if args.retrieve and not Path(args.retrieve).exists():  # said now, not after the first question
        raise MissingArtifact(f"--retrieve {args.retrieve}: not found (a folder or file of documents)")
    retriever = ({"name": "bm25", "collection": args.retrieve} if args.retrieve
                 else {"name": "http", "url": args.retrieve_url})
    return RetrievalConfig(retriever=retriever, threshold=args.threshold, k=args.k)
