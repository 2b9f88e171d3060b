"""harness.compute: every bad input gets one clear line naming what is wrong."""
import numpy as np
import pytest

import harness
from harness import InputError, UsageError

X = np.arange(12, dtype=np.float32).reshape(3, 4)


def test_compute_matches_reference():
    y = harness.compute("softmax", x=X, backend="numpy")
    assert y.shape == X.shape and np.allclose(y.sum(axis=1), 1.0)
    y2 = harness.compute("softmax", x=X, backend="python", variant="online")
    assert np.allclose(y, y2, atol=1e-6)


@pytest.mark.parametrize("kwargs,msg", [
    ({"x": X.astype(np.float64)}, "input 'x' must be float32, got float64"),
    ({"x": X[:, ::2]}, "must be C-contiguous"),
    ({"x": np.asfortranarray(X)}, "must be C-contiguous"),
    ({"x": np.zeros((0, 4), np.float32)}, "is empty"),
    ({"x": np.array([[1.0, np.nan]], np.float32)}, "non-finite value (nan) at index [0, 1]"),
    ({"x": X.reshape(-1)}, "must be 2-D"),
    ({"x": X.tolist()}, "must be a numpy array, got list"),
    ({"y": X}, "missing x; unexpected y"),
])
def test_bad_softmax_input(kwargs, msg):
    with pytest.raises(InputError) as e:
        harness.compute("softmax", backend="numpy", **kwargs)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_mismatched_shapes_are_named():
    a = np.ones((3, 4), np.float32)
    with pytest.raises(InputError, match=r"shapes do not match: got A\(3, 4\), B\(5, 2\); expected A\(M, K\), B\(K, N\)"):
        harness.compute("matmul", A=a, B=np.ones((5, 2), np.float32))
    with pytest.raises(InputError, match="shapes do not match"):
        harness.compute("layernorm", x=a, gamma=np.ones(3, np.float32), beta=np.ones(4, np.float32))
    with pytest.raises(InputError, match="shapes do not match"):
        harness.compute("add", a=np.ones(3, np.float32), b=np.ones(4, np.float32))


def test_unknown_primitive_backend_variant():
    with pytest.raises(UsageError, match="unknown primitive 'conv'; valid: add, add_backward, relu"):
        harness.compute("conv", x=X)
    with pytest.raises(UsageError, match="unknown backend 'fortran'"):
        harness.compute("softmax", x=X, backend="fortran")
    with pytest.raises(InputError, match="no variant 'fast' of softmax; valid: three_pass, online"):
        harness.compute("softmax", x=X, backend="python", variant="fast")


def test_scalars_are_passed_by_name():
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32) * np.float32(1e-3)
    g, b = np.ones(8, np.float32), np.zeros(8, np.float32)
    default = harness.compute("layernorm", x=x, gamma=g, beta=b, backend="python")
    small_eps = harness.compute("layernorm", x=x, gamma=g, beta=b, eps=1e-9, backend="python")
    assert np.abs(small_eps).max() > 1.5 * np.abs(default).max()     # eps dominates a 1e-6 variance
    with pytest.raises(InputError, match="takes inputs"):
        harness.compute("layernorm", x=x, gamma=g, beta=b, epsilon=1e-9)


def test_unavailable_backend_says_why(register):
    register(gone="tests.fakes:UnavailableBackend")
    with pytest.raises(InputError, match="not available here: no such hardware here"):
        harness.compute("softmax", x=X, backend="gone")
