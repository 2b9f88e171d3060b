"""The Mojo backend's Python side: every bad input is refused in Python with a clear
error and never reaches Mojo; the argument block follows the declaration slot by slot;
bound cases poison, restore and keep alive what they should; variants come from the
sources without a compiler; availability, skip reasons and the environment block.

The validation tests give the op layer (MojoOps) a resolver whose Mojo function is a spy
that fails the test if it is called: an InputError raised while the spy stays silent
proves no address crossed over. Other tests make it a Python "kernel" that reads the
block the way Mojo does (args.decode plus the addresses), so the calling convention is
checked without a compiler. Only the tests marked `mojo` need one (the op layer on real
kernels is tested in test_mojo_ops.py).
"""
import ctypes
import sys
import types

import numpy as np
import pytest

from harness import backends
from harness.backends.base import BackendError
from harness.backends.mojo import args as block_args
from harness.backends.mojo import build
from harness.backends.mojo.backend import MojoBackend, MojoKernel, MojoOps
from harness.core import catalogue
from harness.core.declaration import INT_SENTINEL
from harness.core.runner import RunConfig, Runner
from harness.core.timing import TimingConfig
from harness.errors import InputError
from tests import mojo_probe


@pytest.fixture(scope="module")
def backend(mojo_backend):
    return mojo_backend


def never_called(*args):
    raise AssertionError(f"a Mojo function was called with {args} despite invalid inputs")


def spy_ops(fn=never_called, name=None):
    """An op layer whose every kernel is `fn` (no compiler, no module)."""
    return MojoOps(lambda prim, variant: (fn, name or f"{prim.name}_{variant}"))


def spy_kernel(primitive, fn=never_called, name=None):
    prim = primitive if not isinstance(primitive, str) else catalogue.get(primitive)
    return MojoKernel(spy_ops(fn, name), prim.name, "spy", compile_s=0.0, cached=True)


def f32(*shape):
    return np.ones(shape, dtype=np.float32)


BAD_INPUTS = {
    "float64": ("add", lambda: {"a": np.ones(8), "b": f32(8)}, "must be float32"),
    "int64 where float32 is declared": ("relu", lambda: {"x": np.ones(8, np.int64)}, "must be float32"),
    "float16": ("relu", lambda: {"x": np.ones(8, np.float16)}, "must be float32"),
    "big-endian float32": ("relu", lambda: {"x": np.ones(8, ">f4")}, "must be float32"),
    "non-contiguous": ("relu", lambda: {"x": f32(16)[::2]}, "C-contiguous"),
    "Fortran order": ("softmax", lambda: {"x": np.asfortranarray(f32(3, 5))}, "C-contiguous"),
    "transposed view": ("matmul", lambda: {"A": f32(4, 3).T, "B": f32(4, 2)}, "C-contiguous"),
    "a list": ("relu", lambda: {"x": [1.0, 2.0, 3.0]}, "must be a numpy array"),
    "a scalar": ("relu", lambda: {"x": np.float32(1.0)}, "must be a numpy array"),
    "0-d array": ("relu", lambda: {"x": np.array(1.0, np.float32)}, "must be 1-D"),
    "wrong ndim": ("softmax", lambda: {"x": f32(12)}, "must be 2-D"),
    "empty vector": ("add", lambda: {"a": f32(0), "b": f32(0)}, "is empty"),
    "empty rows": ("softmax", lambda: {"x": f32(0, 4)}, "is empty"),
    "empty columns": ("layernorm", lambda: {"x": f32(4, 0), "gamma": f32(0), "beta": f32(0)}, "is empty"),
    "mismatched add": ("add", lambda: {"a": f32(8), "b": f32(7)}, "shapes do not match"),
    "matmul inner dims": ("matmul", lambda: {"A": f32(4, 3), "B": f32(5, 2)}, "shapes do not match"),
    "gamma too short": ("layernorm", lambda: {"x": f32(4, 6), "gamma": f32(5), "beta": f32(6)},
                        "shapes do not match"),
    "beta 2-D": ("layernorm", lambda: {"x": f32(4, 6), "gamma": f32(6), "beta": f32(1, 6)}, "must be 1-D"),
    "missing input": ("add", lambda: {"a": f32(8)}, "missing b"),
    "old tensor names": ("matmul", lambda: {"a": f32(4, 3), "b": f32(3, 2)}, "missing A, B"),
    "an output passed as input": ("relu", lambda: {"x": f32(8), "y": f32(8)}, "unexpected y"),
    "NaN": ("relu", lambda: {"x": np.array([1, np.nan], np.float32)}, "non-finite"),
    "inf": ("layernorm", lambda: {"x": f32(2, 3), "gamma": np.array([1, np.inf, 1], np.float32), "beta": f32(3)},
            "non-finite"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_before_mojo(case):
    primitive, make, message = BAD_INPUTS[case]
    with pytest.raises(InputError, match=message):
        spy_kernel(primitive).bind(make())


def test_float_where_int64_is_declared_is_refused():
    with mojo_probe.declared() as prim:
        case = prim.make_inputs((6,), "normal")
        case["idx"] = case["idx"].astype(np.float32)
        with pytest.raises(InputError, match="'idx' must be int64"):
            spy_kernel(prim).bind(case)


def test_unknown_or_mistyped_scalars_are_refused():
    prim = catalogue.get("layernorm")
    case = prim.make_inputs((2, 3), "normal")
    with pytest.raises(InputError, match="unknown scalar epsilon"):
        spy_kernel(prim).bind(case, {"epsilon": 1e-5})
    with mojo_probe.declared() as p:
        with pytest.raises(InputError, match="int32"):
            spy_kernel(p).bind(p.make_inputs((3,), "normal"), {"m": (1 << 40) + 3})
    arrays = {t.name: np.zeros(3, t.np_dtype) for t in p.tensors}
    with pytest.raises(InputError, match="scalar 'm' = 1099511627779 does not fit in int32"):
        block_args.pack(p, arrays, (3,), {"alpha": 1.0, "k": 1, "m": (1 << 40) + 3})
    with pytest.raises(InputError, match="scalar 'k' must be an integer, got 2.5"):
        block_args.pack(p, arrays, (3,), {"alpha": 1.0, "k": 2.5, "m": 0})


def test_misaligned_array_is_copied_on_upload_and_refused_as_storage():
    """prim.validate does not look at alignment. Bind uploads every input into an aligned
    array of its own, so a misaligned user array is fine; storage swapped behind the op
    layer's back is refused by the block packer, before any address is taken."""
    raw = np.zeros(4 * 9 + 1, dtype=np.uint8)
    x = raw[1:].view(np.float32)                  # float32 data starting at an odd address
    assert not x.flags.aligned
    seen = []
    prim = catalogue.get("relu")
    spy_kernel(prim, python_kernel(prim, lambda x, y, n: None, seen)).bind({"x": x}).run()
    assert len(seen) == 1
    ops = spy_ops()
    xb, yb = ops.upload(np.ones(9, np.float32)), ops.empty((9,))
    assert xb.storage.ctypes.data % 64 == 0 and yb.storage.ctypes.data % 64 == 0
    xb.storage = x
    with pytest.raises(InputError, match="cannot be passed to Mojo: it must be aligned"):
        ops.call("relu", "spy", {"x": xb, "y": yb})


# ----------------------------------------------------------------------------- the block packer

class AddressSpy(np.ndarray):
    """An array that records every time its address is read."""
    reads = 0

    @property
    def ctypes(self):
        AddressSpy.reads += 1
        return super().ctypes


def spied(a):
    return np.ascontiguousarray(a).view(AddressSpy)


@pytest.mark.parametrize("bad,message", [
    (lambda: np.ones(6, np.float64), "must be float32"),
    (lambda: np.ones(6, np.int64), "must be float32"),
    (lambda: np.ones(5, np.float32), r"must have shape \(6,\)"),
    (lambda: np.ones(12, np.float32)[::2], "must be C-contiguous"),
    (lambda: np.zeros(25, np.uint8)[1:].view(np.float32), "must be aligned"),
    (lambda: [1.0] * 6, "not a numpy array"),
])
def test_pack_takes_no_address_before_every_array_passed(bad, message):
    """The packer checks the output (last in the slot order) before it reads the input's
    address: an InputError with no address read."""
    prim = catalogue.get("relu")
    AddressSpy.reads = 0
    with pytest.raises(InputError, match=message):
        block_args.pack(prim, {"x": spied(f32(6)), "y": bad()}, (6,), {})
    assert AddressSpy.reads == 0
    block_args.pack(prim, {"x": spied(f32(6)), "y": spied(f32(6))}, (6,), {})
    assert AddressSpy.reads == 2                  # the good case does read them


def test_pack_refuses_a_read_only_output_and_wrong_arguments():
    prim = catalogue.get("relu")
    y = f32(6)
    y.flags.writeable = False
    with pytest.raises(InputError, match="'y'.*read-only"):
        block_args.pack(prim, {"x": f32(6), "y": y}, (6,), {})
    with pytest.raises(InputError, match="missing y"):
        block_args.pack(prim, {"x": f32(6)}, (6,), {})
    with pytest.raises(InputError, match="2 dims given"):
        block_args.pack(prim, {"x": f32(6), "y": f32(6)}, (6, 1), {})
    with pytest.raises(InputError, match="takes scalars"):
        block_args.pack(prim, {"x": f32(6), "y": f32(6)}, (6,), {"eps": 1.0})


@pytest.mark.parametrize("name", sorted(catalogue.PRIMITIVES))
def test_block_follows_the_declaration_slot_by_slot(name):
    """Every tensor in declaration order (all roles), then the dims, then the scalars."""
    prim = catalogue.get(name)
    dims = prim.check_dims[-1]
    arrays = {t.name: np.zeros(prim.shape_of(t, dims), t.np_dtype) for t in prim.tensors}
    scalars = prim.scalar_values()
    block = block_args.pack(prim, arrays, dims, scalars)
    expected = ([("float32 tensor" if t.dtype == "float32" else "int64 tensor", arrays[t.name].ctypes.data)
                 for t in prim.tensors]
                + [("integer", d) for d in dims]
                + [("float32 scalar" if s.dtype == "float32" else "integer", scalars[s.name]) for s in prim.scalars])
    assert block_args.decode(block) == expected
    assert block[0] == block_args.MAGIC and block[1] == len(expected) and block.size == 2 + 2 * len(expected)
    assert not block.flags.writeable
    assert [s.name for s in block_args.layout(prim)] == (
        [t.name for t in prim.tensors] + list(prim.dims) + [s.name for s in prim.scalars])


def test_float32_scalar_is_its_bit_pattern_in_the_low_half():
    prim = catalogue.get("layernorm")
    arrays = {t.name: np.zeros(prim.shape_of(t, (2, 3)), np.float32) for t in prim.tensors}
    block = block_args.pack(prim, arrays, (2, 3), prim.scalar_values({"eps": 0.1}))
    word = int(block[-1])
    assert word == int(np.float32(0.1).view(np.uint32))          # high half zero, low half the bits
    assert block_args.signature(prim) == "x, gamma, beta, y | rows, cols | eps"


def test_every_unpack_expects_the_declarations_slots_and_names_them():
    """The one place a .mojo file restates the declaration: `args.expect(n)  # x, y | n`.
    Both the count and the comment must follow it, so a reader of the unpack sees the slots."""
    import re
    from harness.backends.mojo.build import SOURCES
    for prim in catalogue.PRIMITIVES.values():
        path = SOURCES / f"{prim.file_stem}.mojo"
        if not path.exists():
            continue
        n = len(block_args.layout(prim))
        want = f"args.expect({n})"
        lines = [ln for ln in path.read_text().splitlines() if want in ln]
        assert lines, f"{path.name}: no {want} for {prim.name}"
        assert any(re.search(r"#\s*" + re.escape(block_args.signature(prim)) + r"\s*$", ln) for ln in lines), \
            f"{path.name}: {want} is not commented with its slots '{block_args.signature(prim)}'"


# ----------------------------------------------------------------------------- bound cases, no compiler

def python_kernel(prim, body, seen=None):
    """A stand-in for a Mojo entry: reads the block as python_entry.mojo does and calls
    body(**tensors as numpy views of the addresses, **dims, **scalars)."""
    ctype = {"float32 tensor": (ctypes.c_float, np.float32), "int64 tensor": (ctypes.c_int64, np.int64)}

    def entry(address):
        count = ctypes.c_int64.from_address(address + 8).value
        words = np.ctypeslib.as_array((ctypes.c_int64 * (2 + 2 * count)).from_address(address))
        slots = block_args.decode(words)
        dims = dict(zip(prim.dims, (v for (k, v), s in zip(slots, block_args.layout(prim)) if s.what == "dim")))
        kwargs = {}
        for (kind, value), slot in zip(slots, block_args.layout(prim)):
            if slot.what == "tensor":
                c, dt = ctype[kind]
                shape = prim.shape_of(slot.name, tuple(dims[d] for d in prim.dims))
                n = int(np.prod(shape))
                kwargs[slot.name] = np.ctypeslib.as_array((c * n).from_address(value)).view(dt).reshape(shape)
            else:
                kwargs[slot.name] = value
        if seen is not None:
            seen.append({k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in kwargs.items()})
        body(**kwargs)
    return entry


def test_read_only_inputs_are_fine_and_outputs_are_poisoned_before_every_run():
    prim = catalogue.get("relu")
    x = np.arange(10, dtype=np.float32) - 5
    x.flags.writeable = False
    seen = []

    def relu(x, y, n):
        y[:] = np.maximum(x, 0)
    bound = spy_kernel(prim, python_kernel(prim, relu, seen)).bind({"x": x})
    for _ in range(2):
        assert np.array_equal(bound.run()["y"], np.maximum(x, 0))
    assert all(np.isnan(s["y"]).all() for s in seen)          # every call found y poisoned
    assert all(np.array_equal(s["x"], x) for s in seen) and seen[0]["n"] == 10


@pytest.fixture
def probe_declared():
    with mojo_probe.declared() as prim:
        yield prim


def test_inout_tensor_is_restored_from_pristine_before_each_call(probe_declared):
    prim = probe_declared
    case = prim.make_inputs((7,), "normal", seed=1)
    pristine = case["acc"].copy()
    seen = []

    def probe(x, idx, y, shifted, acc, n, alpha, k, m):
        y[:] = np.float32(alpha) * x[idx] + np.float32(m)
        shifted[:] = idx + k
        acc += y
    bound = spy_kernel(prim, python_kernel(prim, probe, seen)).bind(case, prim.scalar_values())
    first = {k: v.copy() for k, v in bound.run().items()}
    assert (seen[0]["shifted"] == INT_SENTINEL).all() and np.isnan(seen[0]["y"]).all()
    bound.run()
    bound.time_once(lambda: 0, calls=4)                   # restored once, then four steps in a row
    bound.run()
    assert all(np.array_equal(s["acc"], pristine) for i, s in enumerate(seen) if i not in (3, 4, 5))
    assert np.array_equal(bound.outputs()["acc"], first["acc"])
    assert np.array_equal(case["acc"], pristine)          # the caller's array is never the one updated
    assert first["shifted"].tolist() == (case["idx"] + prim.scalar_values()["k"]).tolist()


def test_bind_allocates_outputs_and_keeps_everything_alive():
    """The block holds raw addresses: the bound case must own every array they point to."""
    prim = catalogue.get("matmul")
    inputs = prim.make_inputs((5, 7, 3), "normal")
    expected = inputs["A"] @ inputs["B"]

    def matmul(A, B, C, M, K, N):
        C[:] = A @ B
    bound = spy_kernel(prim, python_kernel(prim, matmul)).bind(dict(inputs))
    del inputs                                            # the bound case holds its own references
    import gc
    gc.collect()
    out = bound.run()["C"]
    assert out.shape == (5, 3) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert type(bound._call._address) is int              # a timed call passes one cached int
    assert bound.call == bound._call.run                  # ... and is the call into Mojo itself


def test_a_failing_call_is_a_backend_error_naming_the_kernel():
    def broken(address):
        raise Exception("argument slot 1 holds an int64 tensor, the kernel reads a float32 tensor there")
    kernel = spy_kernel("relu", broken, name="relu_simd")
    with pytest.raises(BackendError, match="relu_simd: argument slot 1 holds"):
        kernel.bind({"x": f32(4)}).run()


# ----------------------------------------------------------------------------- variants, from the sources

def test_variants_come_from_the_sources_without_a_compiler():
    b = MojoBackend()
    b._unavailable = build.MojoUnavailable("Mojo is not installed (simulated)")
    assert b.variants("relu") == ["scalar", "simd", "parallel"]
    assert b.variants("softmax") == ["scalar", "online_simd", "parallel", "fused"]
    assert b.variants("matmul") == ["naive", "reordered", "vectorized", "parallel", "tiled", "adaptive"]
    assert b.variants("matmul_backward") == ["naive", "transposed", "tiled", "adaptive"]
    assert b.variants("adamw") == ["scalar", "simd", "parallel"]
    assert b.kernels("layernorm")["layernorm"][-1] == ("fused", "layernorm_fused")
    assert b.kernels("layernorm")["layernorm_backward"][0] == ("scalar", "layernorm_backward_scalar")
    assert b.ops() is None                                # no op layer where Mojo cannot run


def test_a_primitive_without_a_mojo_file_has_no_variants(tmp_path):
    assert MojoBackend(sources=tmp_path).variants("relu") == []
    with pytest.raises(BackendError, match="no variant 'simd' of relu; valid: none"):
        MojoBackend(sources=tmp_path).prepare("relu", "simd")


def test_registration_lines_are_read_in_order(tmp_path):
    (tmp_path / "relu.mojo").write_text(
        '# add_variant[relu_call[relu_commented]](m, "relu_commented")\n'
        'def PyInit_relu():\n'
        '    add_variant[relu_call[relu_b]](m, "relu_b")\n'
        '    add_variant[relu_call[\n'
        '        relu_a]](\n'
        '        m, "relu_a")\n')
    assert build.registered(tmp_path / "relu.mojo") == ["relu_b", "relu_a"]
    assert MojoBackend(sources=tmp_path).variants("relu") == ["b", "a"]


def test_a_registration_that_names_no_primitive_is_an_error(tmp_path):
    (tmp_path / "relu.mojo").write_text('add_variant[relu_call[simd]](m, "simd")\n')
    with pytest.raises(BackendError, match="'simd', which is not named <primitive>_<variant>"):
        MojoBackend(sources=tmp_path).variants("relu")
    (tmp_path / "relu.mojo").write_text('add_variant[a](m, "relu_x")\nadd_variant[b](m, "relu_x")\n')
    with pytest.raises(BackendError, match="registers relu_x more than once"):
        MojoBackend(sources=tmp_path).variants("relu")


def test_unknown_variant_is_a_backend_error():
    with pytest.raises(BackendError, match="no variant 'warp' of softmax"):
        MojoBackend().prepare("softmax", "warp")


# ----------------------------------------------------------------------------- availability

def test_mojo_absent_is_unavailable_with_the_install_command(monkeypatch):
    real_find_spec = build.importlib.util.find_spec
    monkeypatch.setattr(build.importlib.util, "find_spec",
                        lambda name, *a: None if name == "mojo" else real_find_spec(name, *a))
    avail = MojoBackend().availability()
    assert not avail.ok
    assert "Mojo is not installed" in avail.reason
    assert "pip install mojo-compiler==1.2.0 max-core==26.7.0 max-mojo-libs==26.7.0" in avail.hint
    with pytest.raises(BackendError, match="Mojo is not available: Mojo is not installed"):
        MojoBackend().prepare("add", "simd")


@pytest.mark.parametrize("missing,reason", [
    ("lib/libAsyncRTMojoBindings.so", "max-core is not installed"),
    ("lib/mojo/max.mojoc", "max-mojo-libs is not installed"),
    ("bin/mojo", "Mojo compiler is missing"),
])
def test_partial_install_names_the_missing_package(monkeypatch, tmp_path, missing, reason):
    for part in ("bin/mojo", "lib/mojo/max.mojoc", "lib/libAsyncRTMojoBindings.so"):
        if part != missing:
            (tmp_path / part).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / part).write_bytes(b"")
    monkeypatch.setattr(build.importlib.util, "find_spec", lambda name, *a: object())
    fake_root = types.ModuleType("mojo._package_root")
    fake_root.get_package_root = lambda: tmp_path
    monkeypatch.setitem(sys.modules, "mojo", types.ModuleType("mojo"))    # also where Mojo is absent
    monkeypatch.setitem(sys.modules, "mojo._package_root", fake_root)
    avail = MojoBackend().availability()
    assert not avail.ok and reason in avail.reason
    assert "pip install" in avail.hint


def test_runner_skips_unavailable_mojo_and_runs_the_rest(monkeypatch):
    unavailable = MojoBackend()
    unavailable._unavailable = build.MojoUnavailable("Mojo is not installed (simulated)")
    monkeypatch.setitem(backends._instances, "mojo", unavailable)
    cfg = RunConfig(primitives=["relu"], backends=["numpy", "mojo"], sizes=[64], checks=False,
                    timing=TimingConfig.quick())
    rows = Runner(cfg).run()
    mojo_rows = [r for r in rows if r["backend"] == "mojo"]
    assert [r["status"] for r in mojo_rows] == ["skip"]
    assert "Mojo is not installed (simulated)" in mojo_rows[0]["reason"]
    assert any(r["backend"] == "numpy" and r["status"] == "pass" for r in rows)


# ----------------------------------------------------------------------------- with the compiler

@pytest.mark.mojo
@pytest.mark.parametrize("case", ["float64", "Fortran order", "mismatched add", "a list", "old tensor names"])
def test_prepared_kernel_refuses_before_calling_mojo(backend, monkeypatch, case):
    """The same through the real path: prepare() a built module whose function is a spy."""
    primitive, make, message = BAD_INPUTS[case]
    prim = catalogue.get(primitive)
    name = backend.kernels(prim.file_stem)[primitive][-1][1]
    monkeypatch.setattr(backend.module(prim.file_stem).module, name, never_called)
    kernel = backend.prepare(primitive, backend.variants(primitive)[-1])
    with pytest.raises(InputError, match=message):
        kernel.bind(make())


@pytest.mark.mojo
def test_compute_api_refuses_before_calling_mojo(backend, monkeypatch):
    import harness
    monkeypatch.setattr(backend.module("add").module, "add_parallel", never_called)
    monkeypatch.setitem(backends._instances, "mojo", backend)
    with pytest.raises(InputError, match="must be float32"):
        harness.compute("add", backend="mojo", a=np.ones(4), b=np.ones(4, np.float32))


@pytest.mark.mojo
def test_compute_api_runs_mojo_with_a_scalar(backend, monkeypatch):
    import harness
    monkeypatch.setitem(backends._instances, "mojo", backend)
    prim = catalogue.get("layernorm")
    case = prim.make_inputs((3, 40), "small_spread")
    for eps in (1e-5, 0.5):
        y = harness.compute("layernorm", backend="mojo", eps=eps, **case)
        ref = prim.reference_outputs(case, {"eps": eps})["y"]
        np.testing.assert_allclose(y, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.mojo
def test_empty_call_floor_goes_through_the_kernel_path(backend):
    backend.module("relu")
    floor = backend.measure_floor(TimingConfig.quick(), __import__("time").perf_counter_ns)
    assert 0 < floor["median_s"] < 50e-6 and floor["p25_s"] <= floor["median_s"] <= floor["p75_s"]
    assert floor["calls_per_sample"] > 1 and "no-op" in floor["how"]


@pytest.mark.mojo
def test_availability_and_environment_describe_the_target(backend):
    avail = backend.availability()
    assert avail.ok and "Mojo" in avail.detail
    tc = backend.toolchain()
    env = backend.environment()
    assert env["mojo"].startswith("Mojo ") and env["mojo_target_cpu"] == tc.target_cpu
    # The width the compiled code reports is the one derived from the target features.
    assert int(backend.module("relu").module.simd_width()) == tc.simd_width_f32
    assert backend.environment()["mojo_simd_width_f32"] == tc.simd_width_f32
