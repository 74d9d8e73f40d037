"""The language map: a model's token embeddings drawn in 2D, where similar words land near each other.

Why: it is the picture that makes "the model learned something about language" visible. A randomly initialised
embedding table is a cloud with no structure; after pretraining, words used alike (numbers, days, pronouns,
verbs in the past tense) gather. The map is drawn with PCA from scikit-learn (deterministic, fast on any vocab
size) over whole-word tokens that occur often in text, with nearest-neighbour lists (cosine similarity over the
full embedding, not the 2D projection) for a few probe words.

Three ways in: ``lmforge map MODEL_DIR`` for any causal LM; the ``language_map`` evaluator on the pretrainer
stage, which draws the trained model beside its random initialisation into the artifact (``language_map.png``,
``language_map.json``) and logs how much the neighbour lists agree with the random ones (low is good); and
:func:`draw_language_map` from Python.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

# Probe words whose neighbours are listed; those missing from a vocabulary as single tokens are skipped.
DEFAULT_PROBES = ("the", "he", "she", "one", "two", "day", "good", "was", "king", "water", "said", "year")


@dataclass
class LanguageMapConfig:
    words: int = 150  # how many whole-word tokens to label on the map
    probes: list[str] = field(default_factory=lambda: list(DEFAULT_PROBES))
    neighbours: int = 5
    text: str | None = None  # label the words most used in this text (the evaluator passes the training text)


@dataclass
class WordEmbeddings:
    """The embedding rows of whole-word tokens: ``words[i]`` is the word for row ``vectors[i]``."""

    words: list[str]
    token_ids: list[int]
    vectors: object  # numpy array (len(words), hidden)


def whole_word_tokens(tokenizer, limit: int, ranked_text: str | None = None) -> list[tuple[str, int]]:
    """(word, id) for tokens that decode to one alphabetic word starting with a space (a whole word).

    Ranked by frequency in ``ranked_text`` when given, else by id (earlier BPE merges are more frequent pieces).
    Tokenizers with no word-start marks at all fall back to every alphabetic token.
    """
    special = set(tokenizer.all_special_ids)
    spaced: dict[str, int] = {}  # " word": a word start, as it appears mid-sentence
    bare: dict[str, int] = {}  # "word" with no space: a whole word only for tokenizers without space marks
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        piece = tokenizer.decode([token_id])
        word = piece.strip()
        if len(word) < 2 or not word.isalpha() or not word.isascii():
            continue
        (spaced if piece.startswith(" ") else bare).setdefault(word, token_id)
    # Byte-level BPE marks word starts with a space; its unspaced pieces are mostly suffixes ("ation", "ould").
    found = spaced if len(spaced) >= 3 else {**bare, **spaced}
    if ranked_text:  # only words the text uses as whole words, most frequent first
        counts: dict[str, int] = {}
        for word in re.findall(r"[A-Za-z]+", ranked_text):
            counts[word] = counts.get(word, 0) + 1
        order = sorted((w for w in found if counts.get(w)), key=lambda w: (-counts[w], found[w]))
    else:
        order = sorted(found, key=lambda w: found[w])
    return [(word, found[word]) for word in order[:limit]]


def word_embeddings(model, tokenizer, words: list[tuple[str, int]]) -> WordEmbeddings:
    import numpy as np

    table = model.get_input_embeddings().weight.detach().float().cpu().numpy()
    ids = [token_id for _, token_id in words]
    return WordEmbeddings([w for w, _ in words], ids, np.asarray(table[ids]))


def nearest_neighbours(embeddings: WordEmbeddings, probes, k: int) -> dict[str, list[str]]:
    """For each probe word present, its ``k`` nearest words by cosine similarity of the full embeddings."""
    import numpy as np

    vectors = embeddings.vectors / (np.linalg.norm(embeddings.vectors, axis=1, keepdims=True) + 1e-8)
    similarity = vectors @ vectors.T
    index = {word: i for i, word in enumerate(embeddings.words)}
    result = {}
    for probe in probes:
        if probe not in index:
            continue
        row = similarity[index[probe]].copy()
        row[index[probe]] = -np.inf
        result[probe] = [embeddings.words[j] for j in np.argsort(-row)[:k]]
    return result


def project_2d(embeddings: WordEmbeddings):
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=0).fit_transform(embeddings.vectors)


def plot_map(ax, embeddings: WordEmbeddings, points, title: str) -> None:
    ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.4)
    for word, (x, y) in zip(embeddings.words, points):
        ax.annotate(word, (x, y), fontsize=6, alpha=0.85)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_language_map(panels: list[tuple[str, WordEmbeddings]], out_png: Path) -> Path:
    """One map per (title, embeddings) panel, side by side, into ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 7), squeeze=False)
    for ax, (title, embeddings) in zip(axes[0], panels):
        plot_map(ax, embeddings, project_2d(embeddings), title)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def neighbour_overlap(a: dict[str, list[str]], b: dict[str, list[str]]) -> float:
    """Share of neighbours two neighbour lists have in common (1.0: identical lists; ~0: unrelated)."""
    shared = [len(set(a[w]) & set(b[w])) / max(len(a[w]), 1) for w in a if w in b]
    return sum(shared) / max(len(shared), 1)


def random_init_like(model, seed: int):
    """The same architecture freshly initialised (what pretraining started from when seeded alike)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(model.config)


def language_map(model, tokenizer, cfg: LanguageMapConfig, out_dir: Path, seed: int = 0,
                 compare_random: bool = True) -> dict:
    """Draw the map (beside a random initialisation when asked) and write language_map.png/.json to out_dir."""
    out_dir = Path(out_dir)
    words = whole_word_tokens(tokenizer, cfg.words, cfg.text)
    if len(words) < 3:
        from lmforge.errors import LmforgeError

        raise LmforgeError(f"language map: the vocabulary has only {len(words)} whole-word tokens "
                           "(a character-level tokenizer has none to map)")
    trained = word_embeddings(model, tokenizer, words)
    neighbours = nearest_neighbours(trained, cfg.probes, cfg.neighbours)
    panels = [("trained embeddings", trained)]
    summary = {"words": len(words), "neighbours": neighbours}
    if compare_random:
        random = word_embeddings(random_init_like(model, seed), tokenizer, words)
        random_neighbours = nearest_neighbours(random, cfg.probes, cfg.neighbours)
        panels.insert(0, ("random initialisation", random))
        summary["random_neighbours"] = random_neighbours
        summary["neighbour_overlap_with_random"] = neighbour_overlap(neighbours, random_neighbours)
    draw_language_map(panels, out_dir / "language_map.png")
    (out_dir / "language_map.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def map_main(argv: list[str]) -> int:
    """``lmforge map MODEL``: draw the language map of any causal LM."""
    from lmforge.errors import LmforgeError

    parser = argparse.ArgumentParser(prog="lmforge map", description=(
        "draw a model's token embeddings in 2D (PCA), labelled with common words, with nearest neighbours"))
    parser.add_argument("model", help="a model dir (or a Hub id in the local cache)")
    parser.add_argument("--out", default=None, help="output folder (default: the current directory)")
    parser.add_argument("--words", type=int, default=150, help="whole-word tokens to label")
    parser.add_argument("--probe", action="append", default=None, help="a word whose neighbours to list")
    parser.add_argument("--text", default=None, help="a text file: label the words most frequent in it")
    parser.add_argument("--no-random", action="store_true", help="do not draw the random-init panel beside it")
    args = parser.parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(args.model, use_safetensors=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise LmforgeError(f"lmforge map: cannot load a model from {args.model!r}: "
                           f"{str(exc).splitlines()[0]}") from None
    text = Path(args.text).read_text(encoding="utf-8", errors="replace") if args.text else None
    cfg = LanguageMapConfig(words=args.words, probes=args.probe or list(DEFAULT_PROBES), text=text)
    out = Path(args.out or ".")
    out.mkdir(parents=True, exist_ok=True)
    summary = language_map(model, tokenizer, cfg, out, compare_random=not args.no_random)
    print(f"wrote {out / 'language_map.png'} ({summary['words']} words)")
    for word, near in summary["neighbours"].items():
        print(f"  {word:>8}: {', '.join(near)}")
    if "neighbour_overlap_with_random" in summary:
        print(f"neighbour overlap with a random initialisation: {summary['neighbour_overlap_with_random']:.2f}")
    return 0
