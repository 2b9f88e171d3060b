"""The verifier itself: broken kernels must fail every primitive, and a failure must say
where and by how much."""
import numpy as np
import pytest

from harness import catalogue
from harness.verify import verify

PRIMS = list(catalogue.PRIMITIVES)


def _zeros(prim, inputs, dims):
    return np.zeros(prim.output_shape(dims), np.float32)


def _copy_input(prim, inputs, dims):
    """A 'kernel' that copies (as much of) its first input into the output."""
    out = np.zeros(prim.output_shape(dims), np.float32)
    src = next(iter(inputs.values())).reshape(-1)
    n = min(out.size, src.size)
    out.reshape(-1)[:n] = src[:n]
    return out


def _nan_one(prim, inputs, dims):
    out = prim.reference_output(inputs).astype(np.float32)
    out.reshape(-1)[out.size // 2] = np.nan
    return out


@pytest.mark.parametrize("broken", [_zeros, _copy_input, _nan_one], ids=["zeros", "copy", "nan"])
@pytest.mark.parametrize("name", PRIMS)
def test_broken_kernel_fails_every_primitive(name, broken):
    """Over the primitive's own check cases, a broken kernel must be caught — and on the
    plain N(0,1) case at a realistic size it must be caught every time."""
    prim = catalogue.PRIMITIVES[name]
    caught = 0
    for dims in prim.check_dims:
        for dist in prim.distributions:
            inputs = prim.make_inputs(dims, dist, 0)
            caught += not verify(prim, inputs, broken(prim, inputs, dims), dims).ok
    assert caught > 0
    dims = prim.dims_for(prim.quick_ladder[1])
    inputs = prim.make_inputs(dims, "normal", 0)
    v = verify(prim, inputs, broken(prim, inputs, dims), dims)
    assert not v.ok and v.tol_used_pct > 100 and v.message


@pytest.mark.parametrize("name", PRIMS)
def test_reference_rounded_to_float32_passes(name):
    prim = catalogue.PRIMITIVES[name]
    for dims in prim.check_dims:
        for dist in prim.distributions:
            inputs = prim.make_inputs(dims, dist, 1)
            v = verify(prim, inputs, prim.reference_output(inputs).astype(np.float32), dims)
            assert v.ok and v.tol_used_pct < 100, (dims, dist, v.message)


def test_worst_element_is_reported_with_index_and_values():
    prim = catalogue.PRIMITIVES["softmax"]
    dims = (5, 7)
    inputs = prim.make_inputs(dims, "normal", 0)
    out = prim.reference_output(inputs).astype(np.float32)
    out[3, 4] += 0.01
    out[1, 1] += 0.001                       # smaller error elsewhere: not the worst
    v = verify(prim, inputs, out, dims)
    assert not v.ok
    assert v.worst_index == (3, 4)
    assert v.worst_got == pytest.approx(float(out[3, 4]))
    assert v.worst_ref == pytest.approx(float(prim.reference_output(inputs)[3, 4]))
    assert "[3, 4]" in v.message and "2 of 35 elements" in v.message
    assert v.max_abs_err == pytest.approx(0.01, rel=1e-3)


def test_nan_is_reported_as_non_finite():
    prim = catalogue.PRIMITIVES["gelu"]
    inputs = prim.make_inputs((10,), "normal", 0)
    out = prim.reference_output(inputs).astype(np.float32)
    out[7] = np.inf
    v = verify(prim, inputs, out, (10,))
    assert not v.ok and v.worst_index == (7,) and "non-finite" in v.message


@pytest.mark.parametrize("bad,expect", [
    (np.zeros((3, 3), np.float32), "shape"),
    (np.zeros((4, 3), np.float64), "dtype"),
    (None, "not a numpy array"),
])
def test_wrong_kind_of_output_fails_cleanly(bad, expect):
    prim = catalogue.PRIMITIVES["softmax"]
    inputs = prim.make_inputs((4, 3), "normal", 0)
    v = verify(prim, inputs, bad, (4, 3))
    assert not v.ok and expect in v.message


def test_relu_is_exact():
    prim = catalogue.PRIMITIVES["relu"]
    inputs = prim.make_inputs((64,), "normal", 0)
    out = prim.reference_output(inputs).astype(np.float32)
    i = int(np.argmax(out))
    out[i] = np.nextafter(out[i], np.float32(np.inf))       # one ulp off
    assert not verify(prim, inputs, out, (64,)).ok


def test_matmul_tolerance_follows_the_terms_not_the_result():
    """C[i,j] ~ 0 through cancellation is allowed the rounding its terms imply."""
    prim = catalogue.PRIMITIVES["matmul"]
    a = np.array([[1e4, 1.0, -1e4]], np.float32)
    b = np.array([[1.0], [1e-3], [1.0]], np.float32)
    inputs = {"a": a, "b": b}
    # exact: 1e-3; a float32 sum that loses it entirely is within float32 rounding of 2e4
    assert verify(prim, inputs, np.array([[0.0]], np.float32), (1, 3, 1)).ok
    assert not verify(prim, inputs, np.array([[1.0]], np.float32), (1, 3, 1)).ok
