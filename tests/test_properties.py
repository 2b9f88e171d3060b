"""Hypothesis properties over shapes and inputs: the catalogue's contract holds for any
dims, NumPy and pure Python agree with the reference, validation rejects what it must."""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is a dev dependency (pip install -e .[dev])")
from hypothesis import given, settings, strategies as st  # noqa: E402

from harness import api  # noqa: E402
from harness.backends.pure_python import module_variants  # noqa: E402
from harness.core import catalogue  # noqa: E402
from harness.core.verify import verify  # noqa: E402
from harness.errors import InputError  # noqa: E402

small = st.integers(min_value=1, max_value=40)


@st.composite
def case(draw):
    name = draw(st.sampled_from(list(catalogue.PRIMITIVES)))
    prim = catalogue.PRIMITIVES[name]
    dims = tuple(draw(small) for _ in prim.dims)
    dist = draw(st.sampled_from(prim.all_distributions))
    seed = draw(st.integers(0, 2**16))
    return prim, dims, dist, seed


@settings(max_examples=150, deadline=None)
@given(case())
def test_inputs_match_the_declared_shapes_and_validate(c):
    prim, dims, dist, seed = c
    inputs = prim.make_inputs(dims, dist, seed)
    assert list(inputs) == [t.name for t in prim.inputs]
    for t in prim.inputs:
        arr = inputs[t.name]
        assert arr.shape == prim.shape_of(t, dims) and arr.dtype == t.np_dtype
        assert arr.flags.c_contiguous
    assert api.validate_inputs(prim, inputs) == dims
    again = prim.make_inputs(dims, dist, seed)
    assert all(np.array_equal(inputs[k], again[k]) for k in inputs)     # seeded: reproducible


@settings(max_examples=150, deadline=None)
@given(case())
def test_numpy_idiom_verifies_for_any_dims_on_regular_inputs_and_the_naive_fp32_on_all(c):
    prim, dims, dist, seed = c
    inputs = prim.make_inputs(dims, dist, seed)
    fns = [prim.naive_float32] + ([prim.numpy] if dist not in prim.stress else [])
    for fn in fns:
        outs = prim.call_numpy_style(fn, {k: v.copy() for k, v in inputs.items()})
        v = verify(prim, inputs, outs, dims)
        assert v.ok, v.message
        assert all(np.shape(outs[t.name]) == prim.shape_of(t, dims) for t in prim.outputs)


@settings(max_examples=60, deadline=None)
@given(case())
def test_pure_python_verifies_for_any_dims(c):
    prim, dims, dist, seed = c
    inputs = prim.make_inputs(dims, dist, seed)
    for fn in module_variants(prim.file_stem)[prim.name].values():
        outs = prim.call_numpy_style(fn, {k: a.tolist() for k, a in inputs.items()})
        outs = {t.name: np.asarray(outs[t.name], t.np_dtype) for t in prim.outputs}
        assert verify(prim, inputs, outs, dims).ok


@settings(max_examples=100, deadline=None)
@given(case(), st.integers(0, 5))
def test_any_wrong_input_shape_is_rejected(c, which):
    prim, dims, dist, seed = c
    inputs = prim.make_inputs(dims, dist, seed)
    name = list(inputs)[which % len(inputs)]
    arr = inputs[name]
    inputs[name] = np.zeros(tuple(s + 1 for s in arr.shape), arr.dtype)
    shared = {d for t in prim.inputs if t.name != name for d in t.shape}
    if not shared & set(prim.tensor(name).shape):
        assert api.validate_inputs(prim, inputs) == tuple(d + 1 for d in dims)   # its dims are its own
        return
    with pytest.raises(InputError, match="shapes do not match"):
        api.validate_inputs(prim, inputs)


@settings(max_examples=100, deadline=None)
@given(case())
def test_verify_detects_a_single_corrupted_element(c):
    prim, dims, dist, seed = c
    inputs = prim.make_inputs(dims, dist, seed)
    refs = prim.reference_outputs(inputs)
    name = prim.outputs[0].name
    ref = refs[name]
    out = ref.astype(np.float32)
    i = np.unravel_index(int(np.argmax(np.abs(ref))), ref.shape)
    # Wrong by ten times what the tolerance allows there (plus 1): an ill-conditioned element
    # (attention's scores of 1e6 on outlier rows) may honestly allow a large error, so the
    # corruption is measured in its own tolerance, and must be found and located.
    t = next(t for t in prim.outputs if t.name == name)
    tol = t.tolerance(prim.dims_dict(dims)) if callable(t.tolerance) else t.tolerance
    scale = np.broadcast_to(t.error_scale(inputs, refs, prim.scalar_values(None)) if t.error_scale else np.abs(ref),
                            ref.shape)
    out[i] = out[i] + (1 + 10 * (tol.atol + tol.rtol * float(scale[i])))
    v = verify(prim, inputs, {name: out}, dims, refs=refs)
    assert not v.ok and v.worst_index == tuple(int(k) for k in i)
