"""A test-only primitive and its Mojo module (probe.mojo), to prove the argument block's
typed slots end to end: float32 and int64 tensors in every role, an int dim, int64,
int32 and float32 scalars.

    probe: x (n) in, idx (n) int64 in, y (n) out, shifted (n) int64 out, acc (n) inout
           | n | alpha float32, k int64, m int32
    y = alpha * x[idx] + m,   shifted = idx + k,   acc += y

PROBE is never put in the catalogue for good: `declared()` registers it for one test (or
one test module) and takes it out again. `sources(tmp)` lays out probe.mojo beside a copy
of mojo_impl/python_entry.mojo, the way a file in mojo_impl/ sits, so the module is built
by the real build.py, read by the real Args accessors and listed by the real source
reader.
"""
from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

import numpy as np

from harness.core import catalogue
from harness.core.declaration import F32_EPS, Primitive, Scalar, Tensor, Tolerance
from harness.env import REPO

HERE = Path(__file__).resolve().parent
F32 = np.float32


def permutation(shape, rng, dims):
    return rng.permutation(shape[0]).astype(np.int64)


def reference(x, idx, acc, alpha, k, m):
    y = alpha * x[idx] + m
    return {"y": y, "shifted": idx + k, "acc": acc + y}


def numpy_probe(x, idx, acc, alpha, k, m):
    y = (F32(alpha) * x[idx] + F32(m)).astype(F32)
    acc += y
    return y, idx + np.int64(k)


PROBE = Primitive(
    name="probe", summary="test only: gather, shift, accumulate", order=1000,
    dims=("n",),
    tensors=(Tensor("x", ("n",)),
             Tensor("idx", ("n",), dtype="int64", init=permutation),
             Tensor("y", ("n",), role="out", tolerance=Tolerance(atol=1e-6, rtol=4 * F32_EPS)),
             Tensor("shifted", ("n",), role="out", dtype="int64"),
             Tensor("acc", ("n",), role="inout", tolerance=Tolerance(atol=1e-6, rtol=8 * F32_EPS))),
    scalars=(Scalar("alpha", "float32", 2.5), Scalar("k", "int64", (1 << 40) + 3), Scalar("m", "int32", -7)),
    reference=reference, numpy=numpy_probe,
    flops=lambda d: 3 * d["n"], size_to_dims=lambda n: (n,),
    ladder=(16,), quick_ladder=(16,), gpu_ladder=(16,),
    check_dims=((1,), (5,), (129,)), distributions=("normal",))


@contextlib.contextmanager
def declared():
    """PROBE in the catalogue for the duration, whatever happens."""
    had = catalogue.PRIMITIVES.get(PROBE.name)
    catalogue.PRIMITIVES[PROBE.name] = PROBE
    try:
        yield PROBE
    finally:
        if had is None:
            catalogue.PRIMITIVES.pop(PROBE.name, None)
        else:
            catalogue.PRIMITIVES[PROBE.name] = had


def sources(directory: Path) -> Path:
    """probe.mojo and python_entry.mojo side by side in `directory`; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "probe.mojo", directory / "probe.mojo")
    shutil.copy(REPO / "mojo_impl" / "python_entry.mojo", directory / "python_entry.mojo")
    return directory
