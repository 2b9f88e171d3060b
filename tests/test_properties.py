"""Hypothesis properties over shapes and inputs: the catalogue's contract holds for any
dims, NumPy and pure Python agree with the reference, validation rejects what it must."""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is a dev dependency (pip install -e .[dev])")
from hypothesis import given, settings, strategies as st  # noqa: E402

from harness import api, catalogue  # noqa: E402
from harness.backends.numpy_backend import FUNCTIONS  # noqa: E402
from harness.errors import InputError  # noqa: E402
from harness.verify import verify  # noqa: E402

small = st.integers(min_value=1, max_value=40)


@st.composite
def case(draw):
    name = draw(st.sampled_from(list(catalogue.PRIMITIVES)))
    prim = catalogue.PRIMITIVES[name]
    dims = tuple(draw(small) for _ in prim.dim_names)
    dist = draw(st.sampled_from(prim.distributions))
    seed = draw(st.integers(0, 2**16))
    return prim, dims, dist, seed


@settings(max_examples=150, deadline=None)
@given(case())
def test_inputs_match_the_declared_shapes_and_validate(c):
    prim, dims, dist, seed = c
    inputs = prim.make_inputs(dims, dist, seed)
    assert list(inputs) == list(prim.input_shapes(dims))
    for name, arr in inputs.items():
        assert arr.shape == tuple(prim.input_shapes(dims)[name]) and arr.dtype == np.float32
        assert arr.flags.c_contiguous
    assert api.validate_inputs(prim, inputs) == dims
    again = prim.make_inputs(dims, dist, seed)
    assert all(np.array_equal(inputs[k], again[k]) for k in inputs)     # seeded: reproducible


@settings(max_examples=150, deadline=None)
@given(case())
def test_numpy_backend_verifies_for_any_dims(c):
    prim, dims, dist, seed = c
    inputs = prim.make_inputs(dims, dist, seed)
    out = FUNCTIONS[prim.name](*inputs.values())
    v = verify(prim, inputs, out, dims)
    assert v.ok, v.message
    assert out.shape == tuple(prim.output_shape(dims))


@settings(max_examples=60, deadline=None)
@given(case())
def test_pure_python_verifies_for_any_dims(c):
    import importlib
    prim, dims, dist, seed = c
    inputs = prim.make_inputs(dims, dist, seed)
    for fn in importlib.import_module(f"python_impl.{prim.name}").VARIANTS.values():
        out = np.asarray(fn(*(a.tolist() for a in inputs.values())), np.float32)
        assert verify(prim, inputs, out, dims).ok


@settings(max_examples=100, deadline=None)
@given(case(), st.integers(0, 5))
def test_any_wrong_input_shape_is_rejected(c, which):
    prim, dims, dist, seed = c
    inputs = prim.make_inputs(dims, dist, seed)
    name = list(inputs)[which % len(inputs)]
    arr = inputs[name]
    bigger = np.zeros(tuple(s + 1 for s in arr.shape), np.float32)
    inputs[name] = bigger
    if prim.name in ("add", "relu", "gelu") and len(inputs) == 1:
        return                                   # a single 1-D input of any length is valid
    if prim.name == "softmax":
        return                                   # so is any 2-D softmax input
    with pytest.raises(InputError):
        api.validate_inputs(prim, inputs)


@settings(max_examples=100, deadline=None)
@given(case())
def test_verify_detects_a_single_corrupted_element(c):
    prim, dims, dist, seed = c
    inputs = prim.make_inputs(dims, dist, seed)
    ref = prim.reference_output(inputs)
    out = ref.astype(np.float32)
    i = np.unravel_index(int(np.argmax(np.abs(ref))), ref.shape)
    out[i] = out[i] * 2 + 1                      # a grossly wrong value at the largest element
    v = verify(prim, inputs, out, dims, ref=ref)
    assert not v.ok and v.worst_index == tuple(int(k) for k in i)
