"""The Mojo op layer (MojoOps): buffers are aligned numpy arrays the kernels write in place;
a call is checked once and then runs with no checks and no copies; set_scalars rewrites
single slots of the packed block (AdamW's step); poison, copy, write and free; and every
misuse is one InputError line before any address reaches Mojo.

The tests without the `mojo` mark use a Python stand-in for the Mojo function; the rest
run the real kernels.
"""
import numpy as np
import pytest

from harness.backends.base import BackendError
from harness.backends.mojo.backend import MojoOps
from harness.backends.numpy_baseline import NumpyOps
from harness.core import catalogue
from harness.core.declaration import INT_SENTINEL
from harness.core.verify import verify
from harness.errors import InputError

F32 = np.float32


def never_called(*args):
    raise AssertionError(f"a Mojo function was called with {args} despite invalid buffers")


def spy_ops(fn=never_called):
    return MojoOps(lambda prim, variant: (fn, f"{prim.name}_{variant}"))


def one_line_input_error(fn, match):
    with pytest.raises(InputError, match=match) as e:
        fn()
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- memory, no compiler

@pytest.mark.parametrize("array", [
    np.arange(12, dtype=F32).reshape(3, 4),
    np.arange(7, dtype=np.int64) - 3,
    np.array(2.5, F32),                                   # 0-d, as cross_entropy's loss
    np.arange(10, dtype=F32)[::2],                        # not contiguous: the copy is
])
def test_upload_download_round_trip(array):
    ops = spy_ops()
    buf = ops.upload(array)
    assert buf.shape == array.shape and buf.dtype == array.dtype.name
    got = ops.download(buf)
    assert np.array_equal(got, array) and got.dtype == array.dtype
    assert got.flags.c_contiguous and got.flags.writeable and got.ctypes.data % 64 == 0
    assert got is ops.download(buf)                       # the storage itself: zero-copy
    source = np.array(array, copy=True)
    assert not np.shares_memory(got, array)               # upload copied
    array_copy = np.array(array)
    ops.write(buf, np.zeros_like(array_copy))
    assert not got.any() and np.array_equal(array, source)


def test_upload_and_empty_refuse_other_dtypes():
    ops = spy_ops()
    one_line_input_error(lambda: ops.upload(np.ones(3)), "float32 or int64 only")
    one_line_input_error(lambda: ops.upload(np.ones(3, ">f4")), "float32 or int64 only")
    one_line_input_error(lambda: ops.empty((3,), "float64"), "float32 or int64 only")
    assert ops.empty(5).shape == (5,) and ops.empty((2, 3), "int64").dtype == "int64"


def test_poison_copy_write_and_free():
    ops = spy_ops()
    f, i = ops.upload(np.ones((2, 3), F32)), ops.upload(np.arange(4, dtype=np.int64))
    ops.poison(f)
    ops.poison(i)
    assert np.isnan(ops.download(f)).all() and (ops.download(i) == INT_SENTINEL).all()
    src = ops.upload(np.arange(6, dtype=F32).reshape(2, 3))
    storage = f.storage
    ops.copy(f, src)
    assert f.storage is storage                           # in place: a packed address stays valid
    assert np.array_equal(ops.download(f), ops.download(src))
    one_line_input_error(lambda: ops.copy(f, i), "cannot copy")
    one_line_input_error(lambda: ops.write(f, np.zeros((3, 2), F32)), "cannot write")
    one_line_input_error(lambda: ops.write(f, np.zeros((2, 3))), "cannot write")
    ops.free(f)
    one_line_input_error(lambda: ops.download(f), "has been freed")
    other = NumpyOps().upload(np.ones(3, F32))
    one_line_input_error(lambda: ops.download(other), "is not a buffer of mojo")


def test_a_view_shares_the_memory_under_another_shape():
    ops = spy_ops()
    m = ops.upload(np.arange(6, dtype=F32).reshape(2, 3))
    flat = ops.view(m, (6,))
    assert flat.shape == (6,) and np.shares_memory(flat.storage, m.storage)
    assert ops.download(flat).shape == (6,) and ops.download(m).shape == (2, 3)
    ops.poison(flat)
    assert np.isnan(ops.download(m)).all()
    ops.free(m)                                           # every view is released with it
    one_line_input_error(lambda: ops.download(flat), "has been freed")
    one_line_input_error(lambda: ops.view(ops.upload(np.ones(6, F32)), (4,)), "as")


def test_time_is_perf_counter_seconds_around_the_function():
    ops = spy_ops()
    calls = []
    t = ops.time(lambda: calls.append(1))
    assert calls == [1] and 0 <= t < 0.1


# ----------------------------------------------------------------------------- checked calls, no compiler

def relu_buffers(ops, n=8):
    return {"x": ops.upload(np.linspace(-1, 1, n).astype(F32)), "y": ops.empty((n,))}


@pytest.mark.parametrize("make,match", [
    (lambda ops: {"x": NumpyOps().upload(np.ones(8, F32)), "y": ops.empty((8,))},
     "'x' is not a buffer of mojo"),
    (lambda ops: {"x": ops.upload(np.ones(8, np.int64)), "y": ops.empty((8,))},
     "buffer 'x' is int64, the declaration says float32"),
    (lambda ops: {"x": ops.upload(np.ones(8, F32)), "y": ops.empty((7,))},
     r"buffer 'y' has shape \(7,\), expected \(8,\)"),
    (lambda ops: {"x": ops.upload(np.ones((2, 4), F32)), "y": ops.empty((8,))}, "must be 1-D"),
    (lambda ops: {"x": ops.upload(np.ones(8, F32))}, "missing y"),
    (lambda ops: {"x": ops.upload(np.ones(8, F32)), "y": ops.empty((8,)), "z": ops.empty((8,))},
     "unexpected z"),
])
def test_a_call_on_wrong_buffers_is_one_input_error_line(make, match):
    ops = spy_ops()
    one_line_input_error(lambda: ops.call("relu", "spy", make(ops)), match)


def test_a_call_refuses_freed_or_read_only_buffers_and_bad_scalars():
    ops = spy_ops()
    b = relu_buffers(ops)
    ops.free(b["y"])
    one_line_input_error(lambda: ops.call("relu", "spy", b), "has been freed")
    b = relu_buffers(ops)
    b["y"].storage.flags.writeable = False
    one_line_input_error(lambda: ops.call("relu", "spy", b), "read-only")
    prim = catalogue.get("adamw")
    bufs = {t.name: ops.upload(np.ones(4, F32)) for t in prim.tensors}
    one_line_input_error(lambda: ops.call("adamw", "spy", bufs, {"steps": 2}), "unknown scalar steps")
    one_line_input_error(lambda: ops.call("adamw", "spy", bufs, {"step": 2.5}), "fraction")


def test_set_scalars_rewrites_only_the_named_slot():
    prim = catalogue.get("adamw")
    blocks = []
    ops = MojoOps(lambda p, v: (lambda address: blocks.append(address), "adamw_spy"))
    bufs = {t.name: ops.upload(np.ones(4, F32)) for t in prim.tensors}
    call = ops.call("adamw", "spy", bufs, {"lr": 0.5})
    before = call._block.copy()
    call.set_scalars(step=11)
    changed = np.flatnonzero(call._block != before)
    assert len(changed) == 1 and call.scalars()["step"] == 11 and call.scalars()["lr"] == 0.5
    call.set_scalars(lr=0.25, eps=1e-6)
    assert call.scalars()["lr"] == 0.25 and call.scalars()["eps"] == float(F32(1e-6))
    assert call.scalars()["beta1"] == float(F32(0.9))      # untouched
    one_line_input_error(lambda: call.set_scalars(stepp=1), "unknown scalar stepp")
    one_line_input_error(lambda: call.set_scalars(step=1.5), "fraction")
    one_line_input_error(lambda: call.set_scalars(step=1 << 40), "does not fit in int32")
    one_line_input_error(lambda: call.set_scalars(lr=1e39), "does not fit in float32")
    one_line_input_error(lambda: call.set_scalars(lr=float("nan")), "must be finite")
    assert call.scalars()["step"] == 11 and call.scalars()["lr"] == 0.25   # refused values change nothing
    call.set_scalars(step=np.int32(12), lr=np.float32(0.125))              # numpy scalars: the checked path
    assert call.scalars()["step"] == 12 and call.scalars()["lr"] == 0.125
    assert np.array_equal(call._block[: 2 + 2 * 5], before[: 2 + 2 * 5])   # header and tensor slots untouched
    call.run()
    assert blocks == [call._block.ctypes.data]
    call.close()
    with pytest.raises(BackendError, match="adamw_spy: this call has been closed"):
        call.run()
    assert blocks == [call._block.ctypes.data]             # nothing reached the kernel


# ----------------------------------------------------------------------------- real kernels

@pytest.fixture(scope="module")
def ops(mojo_backend):
    return mojo_backend.ops()


@pytest.mark.mojo
def test_backend_ops_is_the_layer_its_kernels_use(mojo_backend, ops):
    assert isinstance(ops, MojoOps) and mojo_backend.ops() is ops
    assert mojo_backend.prepare("relu", "simd").ops is ops


@pytest.mark.mojo
def test_a_call_writes_its_output_buffer_in_place(ops):
    b = relu_buffers(ops, 1031)
    y = ops.download(b["y"])
    call = ops.call("relu", "simd", b)
    ops.poison(b["y"])
    call.run()
    assert ops.download(b["y"]) is y
    assert np.array_equal(y, np.maximum(ops.download(b["x"]), F32(0)))
    ops.write(b["x"], -ops.download(b["x"]))              # new contents, same buffer, same call
    call.run()
    assert np.array_equal(y, np.maximum(ops.download(b["x"]), F32(0)))


@pytest.mark.mojo
@pytest.mark.parametrize("variant", ["scalar", "simd", "parallel"])
def test_adamw_set_scalars_takes_each_step_like_the_reference(ops, mojo_backend, variant):
    """Five training steps on one bound call, the step number rewritten before each: every
    step matches the float64 reference taken from the state the previous step left."""
    prim = catalogue.get("adamw")
    state = prim.make_inputs((1000,), "normal", seed=4)
    bufs = {name: ops.upload(a) for name, a in state.items()}
    call = ops.call("adamw", variant, bufs, {"lr": 0.01})
    scalars = prim.scalar_values({"lr": 0.01})
    for step in range(1, 6):
        before = {name: ops.download(b).copy() for name, b in bufs.items()}
        call.set_scalars(step=step)
        call.run()
        scalars = prim.scalar_values({"lr": 0.01, "step": step})
        outs = {t.name: ops.download(bufs[t.name]) for t in prim.outputs}
        v = verify(prim, before, outs, (1000,), scalars=scalars)
        assert v.ok, f"step {step}: {v.message}"
        # The step really arrived: the same state with step + 1 gives other parameters.
        other = prim.reference_outputs(before, {**scalars, "step": step + 1})["params"]
        assert not np.allclose(outs["params"], other, rtol=0, atol=1e-9)


@pytest.mark.mojo
@pytest.mark.parametrize("classes", [10, 40])               # rows in lanes, and rows in vectors
def test_out_of_range_labels_through_the_op_layer_are_nan_rows_not_reads(ops, mojo_backend, classes):
    """The op layer checks shapes, not label values: the kernels check each label and make
    its row NaN (never a read outside the row)."""
    logits = np.random.default_rng(0).standard_normal((4, classes)).astype(F32)
    labels = np.array([3, classes, -1, classes - 1], np.int64)
    for variant in mojo_backend.variants("cross_entropy"):
        b = {"logits": ops.upload(logits), "labels": ops.upload(labels), "losses": ops.empty((4,)),
             "loss": ops.empty(())}
        ops.call("cross_entropy", variant, b).run()
        losses = ops.download(b["losses"])
        assert np.isnan(losses[[1, 2]]).all() and np.isfinite(losses[[0, 3]]).all(), variant
        assert np.isnan(ops.download(b["loss"]))
        g = {"logits": b["logits"], "labels": b["labels"], "dlogits": ops.empty((4, classes))}
        ops.call("cross_entropy_backward", variant, g).run()
        d = ops.download(g["dlogits"])
        assert np.isnan(d[[1, 2]]).all() and np.isfinite(d[[0, 3]]).all(), variant


@pytest.mark.mojo
def test_an_mlp_step_on_buffers_matches_the_numpy_idiom(ops):
    """The training step's calls, chained on buffers that never leave the op layer (the
    best variant of each), against the NumPy idioms on the same arrays."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 64)).astype(F32)
    labels = rng.integers(0, 10, 64).astype(np.int64)
    W1, b1 = (0.1 * rng.standard_normal((64, 256))).astype(F32), np.zeros(256, F32)
    W2, b2 = (0.1 * rng.standard_normal((256, 10))).astype(F32), np.zeros(10, F32)
    up = {n: ops.upload(a) for n, a in dict(x=x, labels=labels, W1=W1, b1=b1, W2=W2, b2=b2).items()}
    t = {n: ops.empty(s) for n, s in dict(z1=(64, 256), h1=(64, 256), a1=(64, 256), z2=(64, 10), lo=(64, 10),
                                           losses=(64,), loss=(), dlo=(64, 10), da1=(64, 256), dW2=(256, 10),
                                           db2=(10,), dh1=(64, 256), dx=(64, 64), dW1=(64, 256),
                                           db1=(256,)).items()}
    b = {**up, **t}
    for name in ("h1", "a1", "da1", "dh1"):                 # relu's tensors are 1-D
        b[name + "_flat"] = ops.view(b[name], (64 * 256,))      # the base Ops' view: shared memory

    def best(p):
        from harness.backends.mojo.backend import MojoBackend
        return MojoBackend().variants(p)[-1]
    steps = [
        ("matmul", dict(A="x", B="W1", C="z1")), ("bias_add", dict(x="z1", b="b1", y="h1")),
        ("relu", dict(x="h1_flat", y="a1_flat")), ("matmul", dict(A="a1", B="W2", C="z2")),
        ("bias_add", dict(x="z2", b="b2", y="lo")),
        ("cross_entropy", dict(logits="lo", labels="labels", losses="losses", loss="loss")),
        ("cross_entropy_backward", dict(logits="lo", labels="labels", dlogits="dlo")),
        ("matmul_backward", dict(A="a1", B="W2", dC="dlo", dA="da1", dB="dW2")),
        ("bias_add_backward", dict(dy="dlo", db="db2")),
        ("relu_backward", dict(x="h1_flat", dy="da1_flat", dx="dh1_flat")),
        ("matmul_backward", dict(A="x", B="W1", dC="dh1", dA="dx", dB="dW1")),
        ("bias_add_backward", dict(dy="dh1", db="db1")),
    ]
    calls = [ops.call(p, best(p), {k: b[v] for k, v in names.items()}) for p, names in steps]
    for c in calls:
        c.run()
    np_ = {p: catalogue.get(p).numpy for p, _ in steps}
    h1 = np_["bias_add"](np_["matmul"](x, W1), b1)
    a1 = np_["relu"](h1)
    lo = np_["bias_add"](np_["matmul"](a1, W2), b2)
    _, loss = np_["cross_entropy"](lo, labels)
    dlo = np_["cross_entropy_backward"](lo, labels)
    da1, dW2 = np_["matmul_backward"](a1, W2, dlo)
    dh1 = np_["relu_backward"](h1, da1)
    _, dW1 = np_["matmul_backward"](x, W1, dh1)
    got = {n: ops.download(b[n]) for n in ("loss", "dW2", "dW1", "db1", "db2")}
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-5)
    for name, want in (("dW2", dW2), ("dW1", dW1), ("db1", dh1.sum(0)), ("db2", dlo.sum(0))):
        np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-6, err_msg=name)
