"""The character corpus of `harness train gpt` (harness/data/shakespeare.txt: provenance and
licence in harness/data/README.md), its vocabulary, a train/validation split, the batches
every backend trains on, and the unigram baseline a model must beat.

The vocabulary is the sorted set of the corpus's characters (61). The first 90 % of the
text trains, the last 10 % validates. A batch is B windows of T + 1 characters at seeded
random offsets: the first T are the input, the last T the targets (the next character).
One seeded generator per run, so every backend sees the same windows in the same order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PATH = Path(__file__).resolve().parent.parent / "data" / "shakespeare.txt"
SHA256 = "eb8c68891c73eb8d20df99220fed9895daeedaf13d6f1a45778b3291978f6d6a"
VALIDATION_FRACTION = 0.1


@dataclass(frozen=True)
class Corpus:
    chars: str                        # the vocabulary, sorted: token id i is chars[i]
    train: np.ndarray                 # int64 token ids
    val: np.ndarray

    @property
    def vocab(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> np.ndarray:
        bad = sorted(set(s) - set(self.chars))
        if bad:
            from ..errors import InputError
            raise InputError(f"the prompt has characters the corpus does not: {''.join(bad)!r}")
        index = {c: i for i, c in enumerate(self.chars)}
        return np.array([index[c] for c in s], np.int64)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def load() -> Corpus:
    raw = PATH.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != SHA256:
        raise RuntimeError(f"{PATH.name} is not the corpus this project ships (sha256 {digest[:12]}...)")
    text = raw.decode("utf-8")
    chars = "".join(sorted(set(text)))
    index = {c: i for i, c in enumerate(chars)}
    ids = np.array([index[c] for c in text], np.int64)
    cut = int(round(len(ids) * (1 - VALIDATION_FRACTION)))
    return Corpus(chars, ids[:cut], ids[cut:])


def unigram_baseline(corpus: Corpus) -> float:
    """The validation loss (nats per character) of the best model that ignores context:
    each character predicted with its frequency in the training text (add-one smoothed,
    so that a character absent from training costs a finite loss)."""
    counts = np.bincount(corpus.train, minlength=corpus.vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[corpus.val].mean())


def batches(ids: np.ndarray, batch: int, context: int, steps: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) of every step, each (batch, context) int64."""
    if len(ids) < context + 2:
        from ..errors import InputError
        raise InputError(f"context {context} is longer than the text ({len(ids)} characters)")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        starts = rng.integers(0, len(ids) - context - 1, size=batch)
        window = np.stack([ids[s:s + context + 1] for s in starts])
        out.append((window[:, :-1].copy(), window[:, 1:].copy()))
    return out


def evaluation_batches(ids: np.ndarray, batch: int, context: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed windows spread evenly over the text: the same for every backend and every run."""
    n = batch * count
    starts = np.linspace(0, len(ids) - context - 2, n).astype(np.int64)
    window = np.stack([ids[s:s + context + 1] for s in starts])
    return [(window[i * batch:(i + 1) * batch, :-1].copy(), window[i * batch:(i + 1) * batch, 1:].copy())
            for i in range(count)]

