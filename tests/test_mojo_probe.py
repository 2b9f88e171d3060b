"""The argument block end to end, through a real Mojo module (tests/mojo_probe): every
slot type reaches the kernel intact (float32 and int64 tensors, an int dim, int64, int32
and float32 scalars), out tensors are poisoned and inout tensors restored around real
Mojo calls, and a block read the wrong way raises a clear Python exception before any
pointer is used, instead of reading garbage.
"""
import threading

import numpy as np
import pytest

from harness.backends.base import BackendError
from harness.backends.mojo import args as block_args
from harness.backends.mojo.backend import MojoBackend, exported
from harness.core.declaration import INT_SENTINEL
from harness.core.verify import verify
from tests import mojo_probe

pytestmark = pytest.mark.mojo

SCALARS = {"alpha": 0.375, "k": (1 << 40) + 3, "m": -7}     # k does not fit in 32 bits


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    """The probe primitive declared and its module built (default cache: rebuilt only on an edit)."""
    with mojo_probe.declared() as prim:
        backend = MojoBackend(sources=mojo_probe.sources(tmp_path_factory.mktemp("probe")))
        avail = backend.availability()
        if not avail.ok:
            pytest.skip(f"Mojo is not available: {avail.reason} (to install: {avail.hint})")
        yield prim, backend


def inputs(prim, n=129, seed=3):
    arrays = prim.make_inputs((n,), "normal", seed)
    for a in arrays.values():
        a.flags.writeable = False                        # as the runner hands them out
    return arrays


def test_every_slot_type_reaches_the_kernel(probe):
    prim, backend = probe
    assert backend.variants("probe") == ["gather", "wrong_tag", "wrong_scalar", "wrong_count", "past_the_end"]
    scalars = prim.scalar_values(SCALARS)
    for dims in prim.check_dims:
        case = inputs(prim, dims[0])
        outs = backend.prepare("probe", "gather").bind(case, scalars).run()
        assert set(outs) == {"y", "shifted", "acc"}
        assert outs["shifted"].dtype == np.int64
        v = verify(prim, case, outs, dims, scalars=scalars)
        assert v.ok, v.message
        # Sharper than the tolerance: the float32 scalar arrived as its own bits (to the one
        # rounding an FMA saves), the int64 one whole.
        y = np.float32(0.375) * case["x"][case["idx"]] + np.float32(-7)
        np.testing.assert_array_max_ulp(outs["y"], y, maxulp=1)
        assert np.array_equal(outs["shifted"], case["idx"] + (1 << 40) + 3)


def test_out_tensors_are_poisoned_and_inout_restored_around_real_calls(probe):
    prim, backend = probe
    case = inputs(prim)
    bound = backend.prepare("probe", "gather").bind(case, prim.scalar_values(SCALARS))
    bound.poison()
    outs = bound.outputs()
    assert np.isnan(outs["y"]).all() and (outs["shifted"] == INT_SENTINEL).all()
    first = {k: v.copy() for k, v in bound.run().items()}
    bound.call()                                         # no restore: acc takes a second step
    assert np.allclose(bound.outputs()["acc"], case["acc"] + 2 * first["y"], atol=1e-5)
    second = bound.run()                                 # restored first: the same single step
    assert all(np.array_equal(second[k], first[k]) for k in first)
    bound.time_once(lambda: 0, calls=3)                  # restores, then three steps
    assert np.array_equal(bound.run()["acc"], first["acc"])
    assert np.array_equal(case["acc"], prim.make_inputs((129,), "normal", 3)["acc"])   # caller's copy untouched


@pytest.mark.parametrize("variant,message", [
    ("wrong_tag", "argument slot 1 holds an int64 tensor, the kernel reads a float32 tensor there"),
    ("wrong_scalar", "argument slot 6 holds a float32 scalar, the kernel reads an integer there"),
    ("wrong_count", "the kernel takes 8 argument slots, the block holds 9"),
    ("past_the_end", "argument slot 9 requested, the block holds 9"),
])
def test_a_block_read_the_wrong_way_raises_a_clear_error(probe, variant, message):
    prim, backend = probe
    bound = backend.prepare("probe", variant).bind(inputs(prim), prim.scalar_values())
    bound.poison()
    with pytest.raises(BackendError, match=f"probe_{variant}: {message}"):
        bound.call()
    assert np.isnan(bound.outputs()["y"]).all()          # nothing was written
    # The error took the GIL back on its way out: Python threads still run.
    done = []
    t = threading.Thread(target=lambda: done.append(sum(range(1000))))
    t.start()
    t.join(timeout=10)
    assert done == [499500]


def test_not_a_block_is_refused(probe):
    _, backend = probe
    module = backend.module("probe").module
    x = np.zeros(8, np.float32)
    with pytest.raises(Exception, match="not a kernel argument block"):
        module.probe_gather(x.ctypes.data)
    with pytest.raises(Exception, match="not an argument block address"):
        module.probe_gather(0)


def test_a_kernel_reads_exactly_the_block_python_packed(probe):
    """The same arrays packed by hand (args.pack) and called on the raw module function."""
    prim, backend = probe
    case = inputs(prim, 5)
    arrays = {"x": case["x"], "idx": case["idx"], "y": np.full(5, np.nan, np.float32),
              "shifted": np.zeros(5, np.int64), "acc": np.zeros(5, np.float32)}
    block = block_args.pack(prim, arrays, (5,), prim.scalar_values({"alpha": 1.0, "k": -1, "m": 0}))
    backend.module("probe").module.probe_gather(block.ctypes.data)
    assert np.array_equal(arrays["y"], case["x"][case["idx"]])
    assert np.array_equal(arrays["acc"], arrays["y"])
    assert np.array_equal(arrays["shifted"], case["idx"] - 1)


def test_the_probe_module_exports_what_its_source_registers(probe):
    _, backend = probe
    module = backend.module("probe").module
    assert exported(module) == {name for _, name in backend.kernels("probe")["probe"]}
    assert int(module.simd_width()) == backend.toolchain().simd_width_f32
