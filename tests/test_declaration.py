"""The declaration: one Primitive says everything, and a bad one is refused when declared."""
import numpy as np
import pytest

from harness.core import catalogue
from harness.core.declaration import Backward, Mutant, Primitive, Scalar, Tensor, Tolerance
from harness.errors import InputError

TOL = Tolerance(0.0, 1e-6)


def _decl(**kw):
    base = dict(name="t", summary="t", dims=("n",),
                tensors=(Tensor("x", ("n",)), Tensor("y", ("n",), role="out", tolerance=TOL)),
                reference=lambda x: x, numpy=lambda x: x, flops=lambda d: d["n"], size_to_dims=lambda n: (n,),
                ladder=(8,), quick_ladder=(8,), gpu_ladder=(8,), check_dims=((3,),), distributions=("normal",))
    base.update(kw)
    return Primitive(**base)


@pytest.mark.parametrize("kw,msg", [
    (dict(tensors=(Tensor("x", ("n",), role="sideways"), Tensor("y", ("n",), role="out", tolerance=TOL))), "role"),
    (dict(tensors=(Tensor("x", ("n",), dtype="float16"), Tensor("y", ("n",), role="out", tolerance=TOL))), "dtype"),
    (dict(tensors=(Tensor("x", ("m",)), Tensor("y", ("n",), role="out", tolerance=TOL))), "not a dim"),
    (dict(tensors=(Tensor("i", ("n",), dtype="int64"), Tensor("y", ("n",), role="out", tolerance=TOL))),
     "needs an init"),
    (dict(tensors=(Tensor("x", ("n",)), Tensor("y", ("n",), role="out"))), "needs a tolerance"),
    (dict(tensors=(Tensor("x", ("n",)),)), "no output"),
    (dict(dims=("n", "k")), "appear in no input"),
    (dict(scalars=(Scalar("x", "float32", 1.0),)), "used twice"),
    (dict(scalars=(Scalar("s", "float64", 1.0),)), "scalar dtype"),
    (dict(stress=("normal",)), "both regular and stress"),
])
def test_a_bad_declaration_is_refused_with_the_reason(kw, msg):
    with pytest.raises(ValueError, match=msg):
        _decl(**kw)


def test_dims_are_read_from_the_shapes_by_name():
    mm = catalogue.get("matmul")
    a, b = np.ones((3, 5), np.float32), np.ones((5, 2), np.float32)
    assert mm.dims_from({"A": a, "B": b}) == (3, 5, 2)
    assert mm.dims_dict((3, 5, 2)) == {"M": 3, "K": 5, "N": 2}
    assert mm.shape_of("C", (3, 5, 2)) == (3, 2)
    with pytest.raises(InputError, match=r"shapes do not match: got A\(3, 5\), B\(4, 2\); expected A\(M, K\), B\(K, N\)"):
        mm.dims_from({"A": a, "B": np.ones((4, 2), np.float32)})


def test_byte_counts_default_to_every_tensor_once_and_inout_twice():
    assert catalogue.get("add").byte_count((10,)) == 120
    assert catalogue.get("layernorm").byte_count((4, 8)) == 4 * (2 * 32 + 2 * 8)
    assert catalogue.get("matmul").byte_count((2, 3, 4)) == 4 * (6 + 12 + 8)
    inout = _decl(tensors=(Tensor("v", ("n",), role="inout", tolerance=TOL), Tensor("g", ("n",))),
                  reference=lambda v, g: v + g)
    assert inout.byte_count((10,)) == 4 * 10 * 2 + 4 * 10


def test_scalars_are_typed_and_unknown_ones_refused():
    ln = catalogue.get("layernorm")
    vals = ln.scalar_values()
    assert isinstance(vals["eps"], np.float32) and vals["eps"] == np.float32(1e-5)
    assert ln.scalar_values({"eps": 1e-6})["eps"] == np.float32(1e-6)
    with pytest.raises(InputError, match="unknown scalar epsilon"):
        ln.scalar_values({"epsilon": 1.0})


def test_inputs_are_seeded_and_int64_inputs_use_their_init():
    p = _decl(tensors=(Tensor("x", ("n",)), Tensor("i", ("n",), dtype="int64",
                                                   init=lambda shape, rng, d: rng.integers(0, d["n"], shape)),
                       Tensor("y", ("n",), role="out", tolerance=TOL)),
              reference=lambda x, i: x[i], numpy=lambda x, i: x[i])
    a, b = p.make_inputs((6,), "normal", 3), p.make_inputs((6,), "normal", 3)
    assert a["i"].dtype == np.int64 and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["x"], p.make_inputs((6,), "normal", 4)["x"])
    with pytest.raises(ValueError, match="does not apply"):
        p.make_inputs((6,), "wide", 0)


def test_the_catalogue_resolves_function_names_by_the_longest_primitive_prefix(monkeypatch):
    softmax = catalogue.get("softmax")
    back = _decl(name="softmax_backward", stem="softmax", forward="softmax", backward_of=Backward())
    monkeypatch.setitem(catalogue.PRIMITIVES, back.name, back)
    assert catalogue.resolve("softmax", "softmax_block_online") == (softmax, "block_online")
    assert catalogue.resolve("softmax", "softmax_backward_naive") == (back, "naive")
    assert catalogue.resolve("softmax", "layernorm_naive") is None
    assert catalogue.resolve("softmax", "softmax_") is None
    assert [p.name for p in catalogue.with_stem("softmax")] == ["softmax", "softmax_backward"]


def test_declaring_a_name_twice_or_a_missing_forward_is_refused(monkeypatch):
    monkeypatch.setattr(catalogue, "PRIMITIVES", dict(catalogue.PRIMITIVES))
    with pytest.raises(ValueError, match="declared twice"):
        catalogue.declare(_decl(name="add"))
    with pytest.raises(ValueError, match="forward 'nothing' is not declared"):
        catalogue.declare(_decl(name="x_backward", forward="nothing", backward_of=Backward()))


def test_every_shipped_declaration_is_complete():
    for p in catalogue.PRIMITIVES.values():
        assert p.check_dims and p.ladder and p.quick_ladder and p.gpu_ladder and p.mutants
        assert p.numpy is not None and p.naive_float32 is not None
        for dims in p.check_dims:
            inputs = p.make_inputs(dims, p.distributions[0], 0)
            assert p.validate(inputs) == tuple(dims)
            assert set(p.reference_outputs(inputs)) == {t.name for t in p.outputs}
        assert all(isinstance(m, Mutant) and m.caught_on for m in p.mutants)
        assert set(m for mu in p.mutants for m in mu.caught_on) <= set(p.all_distributions)


@pytest.mark.parametrize("dtype,value,msg", [
    ("int32", 2.5, "got the fraction 2.5"), ("int32", 2**31, "does not fit in int32"),
    ("int64", "three", "must be a number"), ("float32", float("nan"), "must be finite"),
    ("float32", 1e39, "does not fit in float32"),
])
def test_a_scalar_value_its_type_cannot_hold_is_an_input_error(dtype, value, msg):
    with pytest.raises(InputError, match=msg):
        Scalar("s", dtype, 0).cast(value)
    assert Scalar("s", "int64", 0).cast(3.0) == 3 and isinstance(Scalar("s", "int32", 0).cast(7), np.int32)


def test_an_index_tensor_outside_its_range_is_refused_before_any_backend():
    p = _decl(tensors=(Tensor("x", ("n",)),
                       Tensor("i", ("n",), dtype="int64", init=lambda shape, rng, d: rng.integers(0, d["n"], shape),
                              valid_range=lambda d: (0, d["n"])),
                       Tensor("y", ("n",), role="out", tolerance=TOL)),
              reference=lambda x, i: x[i], numpy=lambda x, i: x[i])
    x = np.ones(4, np.float32)
    assert p.validate({"x": x, "i": np.array([0, 3, 1, 2])}) == (4,)
    with pytest.raises(InputError, match=r"input 'i' has 4 at index \[1\], outside \[0, 4\)"):
        p.validate({"x": x, "i": np.array([0, 4, 1, 2])})
