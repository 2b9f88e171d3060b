"""The op layer on the host backends (NumPy, pure Python, the float64 reference): buffers
that stay in the backend's memory, calls checked once and run with no transfer, views that
share memory, scalars changed between runs."""
import numpy as np
import pytest

from harness import backends
from harness.backends.reference import ReferenceOps
from harness.core import catalogue
from harness.errors import InputError

HOSTS = ["numpy", "python"]


def _ops(name):
    return ReferenceOps() if name == "reference" else backends.get(name).ops()


def _variant(name, prim):
    return "reference" if name == "reference" else backends.get(name).variants(prim)[-1]


@pytest.mark.parametrize("name", HOSTS + ["reference"])
def test_upload_download_round_trip_and_write(name):
    ops = _ops(name)
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = ops.upload(a)
    assert b.shape == (3, 4) and b.dtype == "float32" and b.nbytes == 48
    assert np.array_equal(ops.download(b), a)
    ops.write(b, a * 2)
    assert np.array_equal(ops.download(b), a * 2)
    labels = ops.upload(np.array([3, 1, 2], np.int64))
    assert labels.dtype == "int64" and list(ops.download(labels)) == [3, 1, 2]


@pytest.mark.parametrize("name", HOSTS + ["reference"])
def test_a_call_runs_on_buffers_and_matches_the_reference(name):
    ops, prim = _ops(name), catalogue.get("layernorm")
    inputs = prim.make_inputs((5, 7), "normal", 0)
    bufs = {k: ops.upload(v) for k, v in inputs.items()}
    bufs["y"] = ops.empty((5, 7))
    call = ops.call("layernorm", _variant(name, "layernorm"), bufs)
    call.run()
    ref = prim.reference_outputs(inputs)["y"]
    assert np.allclose(ops.download(bufs["y"]), ref, atol=1e-5)


@pytest.mark.parametrize("name", HOSTS)
def test_set_scalars_changes_adamws_step_between_runs(name):
    ops, prim = _ops(name), catalogue.get("adamw")
    inputs = prim.make_inputs((9,), "normal", 1)
    bufs = {k: ops.upload(v) for k, v in inputs.items()}
    call = ops.call("adamw", _variant(name, "adamw"), bufs, {"step": 1})
    state = {k: v.astype(np.float64) for k, v in inputs.items()}
    for step in (1, 2, 3):
        call.set_scalars(step=step)
        call.run()
        state = {**state, **prim.reference_outputs({k: v.astype(np.float32) for k, v in state.items()},
                                                    {"step": step})}
        assert np.allclose(ops.download(bufs["params"]), state["params"], rtol=1e-5, atol=1e-6), step
    with pytest.raises(InputError, match="unknown scalar momentum"):
        call.set_scalars(momentum=0.5)


@pytest.mark.parametrize("name", HOSTS + ["reference"])
def test_a_view_shares_memory_even_when_a_kernel_returns_new_storage(name):
    ops = _ops(name)
    h = ops.upload(np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32))
    flat_in = ops.view(h, (4,))
    a = ops.empty((2, 2))
    flat_out = ops.view(a, (4,))
    ops.call("relu", _variant(name, "relu"), {"x": flat_in, "y": flat_out}).run()
    assert np.array_equal(np.asarray(ops.download(a), np.float32), np.array([[0, 2], [3, 0]], np.float32))
    with pytest.raises(InputError, match="cannot view"):
        ops.view(h, (3,))


@pytest.mark.parametrize("name", HOSTS)
def test_copy_and_poison(name):
    ops = _ops(name)
    src = ops.upload(np.ones(3, np.float32))
    dst = ops.empty((3,))
    ops.copy(dst, src)
    assert np.array_equal(ops.download(dst), np.ones(3, np.float32))
    ops.poison(dst)
    assert np.isnan(ops.download(dst)).all()
    ints = ops.upload(np.zeros(2, np.int64))
    ops.poison(ints)
    assert (ops.download(ints) < 0).all()


@pytest.mark.parametrize("name", HOSTS)
@pytest.mark.parametrize("case,msg", [
    ("missing", "missing y"),
    ("foreign", "is not a buffer of"),
    ("dtype", "is int64, the declaration says float32"),
    ("ndim", "must be 1-D"),
    ("shape", "has shape (5,), expected (4,)"),
    ("mismatch", "shapes do not match"),
])
def test_a_bad_call_is_one_input_error_before_anything_runs(name, case, msg):
    ops = _ops(name)
    other = backends.get("python" if name == "numpy" else "numpy").ops()
    x = ops.upload(np.ones(4, np.float32))
    bufs = {"a": x, "b": ops.upload(np.ones(4, np.float32)), "out": ops.empty((4,))}
    if case == "missing":
        bufs = {"x": x}
        prim = "relu"
    else:
        prim = "add"
        if case == "foreign":
            bufs["b"] = other.upload(np.ones(4, np.float32))
        elif case == "dtype":
            bufs["b"] = ops.upload(np.ones(4, np.int64))
        elif case == "ndim":
            bufs["b"] = ops.upload(np.ones((2, 2), np.float32))
        elif case == "shape":
            bufs["out"] = ops.empty((5,))
        elif case == "mismatch":
            bufs["b"] = ops.upload(np.ones(5, np.float32))
    with pytest.raises(InputError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        ops.call(prim, _variant(name, prim), bufs)
