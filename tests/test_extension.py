"""Adding a primitive is one declaration plus an implementation file per language that has
it. Proven here with two small primitives that exist only in this test, run on python and
numpy only, through the real runner, API and CLI:

  clip_count  a float32 scalar, two outputs, one of them an int64 0-d tensor;
  momentum    an inout tensor updated in place (v = beta * v + g), like an optimizer state.

Every other backend shows "no implementation yet", and nothing else has to change."""
import sys
import types

import numpy as np
import pytest

import harness
from harness import backends
from harness.core import catalogue
from harness.core.declaration import Primitive, Scalar, Tensor, Tolerance
from harness.core.runner import RunConfig, Runner
from harness.core.timing import TimingConfig

FAST = TimingConfig(warmup_calls=1, warmup_s=0.0, min_samples=3, max_samples=3, target_s=0.0, max_call_s=5.0)
F32 = np.float32


def _clip_reference(x, limit):
    return {"y": np.clip(x, -limit, limit), "clipped": np.int64((np.abs(x) > limit).sum())}


def _clip_numpy(x, limit):
    return np.clip(x, -limit, limit), np.int64(np.count_nonzero(np.abs(x) > limit))


CLIP_COUNT = Primitive(
    name="clip_count", summary="clip to [-limit, limit] and count what was clipped", dims=("n",),
    tensors=(Tensor("x", ("n",)),
             Tensor("y", ("n",), role="out", tolerance=Tolerance(atol=0.0, rtol=0.0)),
             Tensor("clipped", (), role="out", dtype="int64")),
    scalars=(Scalar("limit", "float32", 1.0),),
    reference=_clip_reference, numpy=_clip_numpy,
    flops=lambda d: 2 * d["n"], size_to_dims=lambda n: (n,), ladder=(64, 256), quick_ladder=(64, 256),
    gpu_ladder=(1024,), check_dims=((1,), (7,), (129,)), distributions=("normal", "wide"), order=900)

def _momentum_numpy(v, g, beta):
    v *= beta
    v += g


MOMENTUM = Primitive(
    name="momentum", summary="v = beta * v + g, in place", dims=("n",),
    tensors=(Tensor("v", ("n",), role="inout", tolerance=Tolerance(atol=1e-7, rtol=4e-7)),
             Tensor("g", ("n",))),
    scalars=(Scalar("beta", "float32", 0.9),),
    reference=lambda v, g, beta: {"v": beta * v + g},
    numpy=lambda v, g, beta: _momentum_numpy(v, g, beta),
    flops=lambda d: 2 * d["n"], size_to_dims=lambda n: (n,), ladder=(64, 256), quick_ladder=(64, 256),
    gpu_ladder=(1024,), check_dims=((1,), (7,), (129,)), distributions=("normal",), order=901)


def clip_count_loop(x, limit=1.0):
    y, clipped = [], 0
    for v in x:
        if v > limit or v < -limit:
            clipped += 1
        y.append(min(max(v, -limit), limit))
    return y, clipped


def momentum_loop(v, g, beta=0.9):
    for i in range(len(v)):
        v[i] = beta * v[i] + g[i]


def momentum_twice(v, g, beta=0.9):
    """Wrong on purpose: two steps per call. Restoring v before each call is what keeps its
    error the same on every call instead of growing with the number of calls timed."""
    for _ in range(2):
        momentum_loop(v, g, beta)


@pytest.fixture
def extra(monkeypatch):
    """The two primitives declared, with their python_impl files, for one test."""
    for prim in (CLIP_COUNT, MOMENTUM):
        monkeypatch.setitem(catalogue.PRIMITIVES, prim.name, prim)
    for name, fns in (("clip_count", [clip_count_loop]), ("momentum", [momentum_loop, momentum_twice])):
        mod = types.ModuleType(f"python_impl.{name}")
        mod.VARIANTS = fns
        monkeypatch.setitem(sys.modules, f"python_impl.{name}", mod)
    monkeypatch.setattr(backends, "_instances", {})
    return catalogue


def _run(prims, backends_):
    cfg = RunConfig(primitives=list(prims), backends=list(backends_), timing=FAST, quick=True)
    runner = Runner(cfg)
    return runner, runner.run()


def test_an_extra_primitive_runs_on_python_and_numpy_and_others_say_not_yet(extra):
    runner, rows = _run(["clip_count"], ["python", "numpy", "mojo", "cuda"])
    for b in ("python", "numpy"):
        mine = [r for r in rows if r["backend"] == b]
        assert mine and all(r["status"] == "pass" for r in mine), [(r["phase"], r["reason"]) for r in mine]
        assert {r["phase"] for r in mine} == {"check", "timed"}
        assert all(set(r["outputs"]) == {"y", "clipped"} for r in mine)
    for b in ("mojo", "cuda"):
        (row,) = [r for r in rows if r["backend"] == b]
        assert row["status"] == "skip"
        assert "no implementation of clip_count yet" in row["reason"] or "unavailable" in row["reason"]
    assert runner.exit_status() == 0


def test_a_wrong_count_in_the_int64_output_fails(extra, monkeypatch):
    def off_by_one(x, limit=1.0):
        y, clipped = clip_count_loop(x, limit)
        return y, clipped + 1
    off_by_one.__name__ = "clip_count_off_by_one"
    sys.modules["python_impl.clip_count"].VARIANTS = [clip_count_loop, off_by_one]
    _, rows = _run(["clip_count"], ["python"])
    bad = [r for r in rows if r["variant"] == "off_by_one"]
    assert bad and all(r["status"] == "fail" and "output 'clipped'" in r["reason"] for r in bad)
    assert all(r["outputs"]["y"]["ok"] and not r["outputs"]["clipped"]["ok"] for r in bad)


def test_an_inout_tensor_is_restored_before_every_call(extra):
    runner, rows = _run(["momentum"], ["python", "numpy"])
    good = [r for r in rows if r["variant"] in ("loop", "numpy")]
    assert good and all(r["status"] == "pass" for r in good), [r["reason"] for r in good if r["status"] != "pass"]
    timed = [r for r in good if r["phase"] == "timed"]
    assert timed and all(r["verified_after"] and r["samples"] >= 3 for r in timed)
    assert all(r["calls_per_sample"] == 1 for r in timed)        # inout: one restored call per sample
    twice = [r for r in rows if r["variant"] == "twice"]
    assert twice and all(r["status"] == "fail" for r in twice)
    # The same error on every call: restored each time, it never compounds with the calls timed.
    assert len({round(r["max_abs_err"], 6) for r in twice if r["phase"] == "check" and r["shape"] == "129"}) == 1


def test_the_api_takes_scalars_by_name_and_returns_every_output(extra):
    x = np.array([-3, -0.5, 0.2, 2, 5], F32)
    out = harness.compute("clip_count", x=x, limit=1.5, backend="numpy")
    assert set(out) == {"y", "clipped"} and int(out["clipped"]) == 3
    assert np.array_equal(out["y"], np.array([-1.5, -0.5, 0.2, 1.5, 1.5], F32))
    out = harness.compute("clip_count", x=x, backend="python")
    assert int(out["clipped"]) == 3                              # the declared default, 1.0
    v = np.ones(4, F32)
    new = harness.compute("momentum", v=v, g=np.ones(4, F32), backend="numpy")
    assert np.allclose(new, 1.9) and np.array_equal(v, np.ones(4, F32))   # the caller's array is untouched
    with pytest.raises(harness.InputError, match=r"takes inputs \(x\) and scalars \(limit\); unexpected gamma"):
        harness.compute("clip_count", x=x, gamma=2.0)


def test_listing_and_the_cli_show_not_yet_for_the_other_backends(extra, capsys):
    from harness.cli import main
    for b in backends.all_backends():
        if b.name in ("python", "numpy"):
            assert b.variants("clip_count")
        else:
            assert b.variants("clip_count") == []
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "clip_count" in out and "limit: float32 = 1" in out
