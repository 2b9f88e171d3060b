"""The verifier itself: broken kernels must fail every primitive, every output is checked,
int64 outputs are exact, and a failure says where and by how much."""
import numpy as np
import pytest

from harness.core import catalogue
from harness.core.declaration import Primitive, Tensor, Tolerance
from harness.core.verify import verify

PRIMS = list(catalogue.PRIMITIVES)


def _ref32(prim, inputs):
    return {k: v.astype(prim.tensor(k).np_dtype) for k, v in prim.reference_outputs(inputs).items()}


def _zeros(prim, inputs, dims):
    return {t.name: np.zeros(prim.shape_of(t, dims), t.np_dtype) for t in prim.outputs}


def _copy_input(prim, inputs, dims):
    """A 'kernel' that copies (as much of) its first input into each output."""
    outs = {}
    src = next(iter(inputs.values())).reshape(-1)
    for t in prim.outputs:
        out = np.zeros(prim.shape_of(t, dims), t.np_dtype)
        n = min(out.size, src.size)
        out.reshape(-1)[:n] = src[:n]
        outs[t.name] = out
    return outs


def _nan_one(prim, inputs, dims):
    outs = _ref32(prim, inputs)
    for out in outs.values():
        out.reshape(-1)[out.size // 2] = np.nan
    return outs


@pytest.mark.parametrize("broken", [_zeros, _copy_input, _nan_one], ids=["zeros", "copy", "nan"])
@pytest.mark.parametrize("name", PRIMS)
def test_broken_kernel_fails_every_primitive(name, broken):
    """On the plain N(0,1) case at every check size with a few dozen elements and at a
    realistic one, a broken kernel is caught every time (relu of three positive numbers is a
    copy of them: tiny sizes cannot judge a copying kernel)."""
    prim = catalogue.PRIMITIVES[name]
    dims_list = [d for d in prim.check_dims if np.prod(d) >= 33] + [prim.size_to_dims(prim.quick_ladder[1])]
    for dims in dims_list:
        inputs = prim.make_inputs(dims, "normal", 0)
        outs = broken(prim, inputs, dims)
        if broken is _copy_input and all(np.array_equal(outs[k], r) for k, r in prim.reference_outputs(inputs).items()):
            continue                      # add_backward: a copy of its input IS the answer
        v = verify(prim, inputs, outs, dims)
        assert not v.ok and v.tol_used_pct > 100 and v.message, (dims, v.tol_used_pct)


@pytest.mark.parametrize("name", PRIMS)
def test_reference_rounded_to_float32_passes_every_distribution(name):
    prim = catalogue.PRIMITIVES[name]
    for dims in prim.check_dims:
        for dist in prim.all_distributions:
            inputs = prim.make_inputs(dims, dist, 1)
            v = verify(prim, inputs, _ref32(prim, inputs), dims)
            assert v.ok and v.tol_used_pct < 100, (dims, dist, v.message)


def test_worst_element_is_reported_with_index_and_values():
    prim = catalogue.PRIMITIVES["softmax"]
    dims = (5, 7)
    inputs = prim.make_inputs(dims, "normal", 0)
    out = _ref32(prim, inputs)
    out["y"][3, 4] += 0.01
    out["y"][1, 1] += 0.001                  # smaller error elsewhere: not the worst
    v = verify(prim, inputs, out, dims)
    assert not v.ok
    assert v.worst_index == (3, 4) and v.worst.name == "y"
    assert v.worst_got == pytest.approx(float(out["y"][3, 4]))
    assert v.worst_ref == pytest.approx(float(prim.reference_outputs(inputs)["y"][3, 4]))
    assert "[3, 4]" in v.message and "2 of 35 elements" in v.message
    assert v.max_abs_err == pytest.approx(0.01, rel=1e-3)


def test_nan_is_reported_as_non_finite():
    prim = catalogue.PRIMITIVES["gelu"]
    inputs = prim.make_inputs((10,), "normal", 0)
    out = _ref32(prim, inputs)
    out["y"][7] = np.inf
    v = verify(prim, inputs, out, (10,))
    assert not v.ok and v.worst_index == (7,) and "non-finite" in v.message


@pytest.mark.parametrize("bad,expect", [
    ({"y": np.zeros((3, 3), np.float32)}, "shape"),
    ({"y": np.zeros((4, 3), np.float64)}, "dtype"),
    ({"y": None}, "not a numpy array"),
    ({}, "was not returned"),
])
def test_wrong_kind_of_output_fails_cleanly(bad, expect):
    prim = catalogue.PRIMITIVES["softmax"]
    inputs = prim.make_inputs((4, 3), "normal", 0)
    v = verify(prim, inputs, bad, (4, 3))
    assert not v.ok and expect in v.message


def test_relu_is_exact():
    prim = catalogue.PRIMITIVES["relu"]
    inputs = prim.make_inputs((64,), "normal", 0)
    out = _ref32(prim, inputs)
    i = int(np.argmax(out["y"]))
    out["y"][i] = np.nextafter(out["y"][i], np.float32(np.inf))       # one ulp off
    assert not verify(prim, inputs, out, (64,)).ok


def test_matmul_tolerance_follows_the_terms_not_the_result():
    """C[i,j] ~ 0 through cancellation is allowed the rounding its terms imply."""
    prim = catalogue.PRIMITIVES["matmul"]
    a = np.array([[1e4, 1.0, -1e4]], np.float32)
    b = np.array([[1.0], [1e-3], [1.0]], np.float32)
    inputs = {"A": a, "B": b}
    # exact: 1e-3; a float32 sum that loses it entirely is within float32 rounding of the terms
    assert verify(prim, inputs, {"C": np.array([[0.0]], np.float32)}, (1, 3, 1)).ok
    assert not verify(prim, inputs, {"C": np.array([[1.0]], np.float32)}, (1, 3, 1)).ok


# ----------------------------------------------------------------------------- several outputs

def _two_outputs() -> Primitive:
    """y = 2x (float32) and the number of negative entries (int64, a 0-d tensor)."""
    return Primitive(
        name="double_count", summary="test", dims=("n",),
        tensors=(Tensor("x", ("n",)),
                 Tensor("y", ("n",), role="out", tolerance=Tolerance(atol=0.0, rtol=1e-6)),
                 Tensor("negatives", (), role="out", dtype="int64")),
        reference=lambda x: {"y": 2 * x, "negatives": np.int64((x < 0).sum())},
        numpy=lambda x: (2 * x, np.int64((x < 0).sum())),
        flops=lambda d: d["n"], size_to_dims=lambda n: (n,), ladder=(8,), quick_ladder=(8,), gpu_ladder=(8,),
        check_dims=((5,),), distributions=("normal",))


def test_every_output_is_verified_and_named_in_the_message():
    prim = _two_outputs()
    inputs = prim.make_inputs((9,), "normal", 0)
    good = _ref32(prim, inputs)
    assert verify(prim, inputs, good, (9,)).ok
    bad = dict(good, negatives=np.int64(good["negatives"] + 1))
    v = verify(prim, inputs, bad, (9,))
    assert not v.ok and v.outputs["y"].ok and not v.outputs["negatives"].ok
    assert "output 'negatives'" in v.message and "must be exact" in v.message
    assert v.as_fields()["worst_output"] == "negatives"
    assert set(v.as_fields()["outputs"]) == {"y", "negatives"}


def test_an_int64_output_is_exact_and_the_poison_sentinel_fails():
    from harness.core.declaration import INT_SENTINEL
    prim = _two_outputs()
    inputs = prim.make_inputs((9,), "normal", 0)
    outs = _ref32(prim, inputs)
    outs["negatives"] = np.array(INT_SENTINEL)
    v = verify(prim, inputs, outs, (9,))
    assert not v.outputs["negatives"].ok
