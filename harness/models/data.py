"""The digits data set (harness/data/digits.npz: provenance and licence in its README), a
fixed train/test split, and the batches every backend trains on.

Pixels 0..16 are scaled to [0, 1]. The split is a seeded permutation: 1,438 images to train
on, 359 to test. Batches are drawn by one seeded generator per run, so every backend sees
the same images in the same order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PATH = Path(__file__).resolve().parent.parent / "data" / "digits.npz"
SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"
TEST_FRACTION = 0.2
SPLIT_SEED = 1998                     # the year of the data set: any fixed number would do


@dataclass(frozen=True)
class Digits:
    x_train: np.ndarray               # (n, 64) float32 in [0, 1]
    y_train: np.ndarray               # (n,) int64 in 0..9
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def features(self) -> int:
        return self.x_train.shape[1]

    @property
    def classes(self) -> int:
        return 10


def load() -> Digits:
    with np.load(PATH) as f:
        images, labels = f["images"], f["labels"]
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    if digest != SHA256:
        raise RuntimeError(f"{PATH.name} is not the digits data set this project ships (sha256 {digest[:12]}...)")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
    n_test = int(round(TEST_FRACTION * len(labels)))
    test, train = order[:n_test], order[n_test:]
    x = (images.astype(np.float32) / np.float32(16))
    y = labels.astype(np.int64)
    return Digits(x[train], y[train], x[test], y[test])


def batches(data: Digits, batch: int, steps: int, seed: int) -> list[np.ndarray]:
    """The index of every step's batch: epochs of seeded permutations, cut into batches."""
    rng = np.random.default_rng(seed)
    n = len(data.y_train)
    out, order, pos = [], rng.permutation(n), 0
    for _ in range(steps):
        if pos + batch > n:
            order, pos = rng.permutation(n), 0
        out.append(order[pos:pos + batch])
        pos += batch
    return out
