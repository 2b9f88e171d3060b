"""The Mojo backend's Python side: every bad input is refused in Python with a clear
error and never reaches Mojo; availability, skip reasons and the environment block.

The validation tests replace the Mojo function with a spy that fails the test if it is
called: an InputError raised while the spy stays silent proves no address crossed over.
"""
import sys
import types

import numpy as np
import pytest

from harness import backends, catalogue, mojo_build
from harness.backends.base import BackendError
from harness.backends.mojo_backend import MojoBackend, MojoKernel
from harness.errors import InputError
from harness.runner import RunConfig, Runner
from harness.timing import TimingConfig
from mojo_impl import VARIANTS

pytestmark = pytest.mark.mojo


@pytest.fixture
def backend(mojo_backend):
    return mojo_backend


def never_called(*args):
    raise AssertionError(f"a Mojo function was called with {args} despite invalid inputs")


def spy_kernel(primitive):
    return MojoKernel(catalogue.PRIMITIVES[primitive], never_called, compile_s=0.0, cached=True)


def f32(*shape):
    return np.ones(shape, dtype=np.float32)


BAD_INPUTS = {
    "float64": ("add", lambda: {"a": np.ones(8), "b": f32(8)}, "must be float32"),
    "float16": ("relu", lambda: {"x": np.ones(8, np.float16)}, "must be float32"),
    "big-endian float32": ("relu", lambda: {"x": np.ones(8, ">f4")}, "must be float32"),
    "non-contiguous": ("relu", lambda: {"x": f32(16)[::2]}, "C-contiguous"),
    "Fortran order": ("softmax", lambda: {"x": np.asfortranarray(f32(3, 5))}, "C-contiguous"),
    "transposed view": ("matmul", lambda: {"a": f32(4, 3).T, "b": f32(4, 2)}, "C-contiguous"),
    "a list": ("relu", lambda: {"x": [1.0, 2.0, 3.0]}, "must be a numpy array"),
    "a scalar": ("relu", lambda: {"x": np.float32(1.0)}, "must be a numpy array"),
    "0-d array": ("relu", lambda: {"x": np.array(1.0, np.float32)}, "must be 1-D"),
    "wrong ndim": ("softmax", lambda: {"x": f32(12)}, "must be 2-D"),
    "empty vector": ("add", lambda: {"a": f32(0), "b": f32(0)}, "is empty"),
    "empty rows": ("softmax", lambda: {"x": f32(0, 4)}, "is empty"),
    "empty columns": ("layernorm", lambda: {"x": f32(4, 0), "gamma": f32(0), "beta": f32(0)}, "is empty"),
    "mismatched add": ("add", lambda: {"a": f32(8), "b": f32(7)}, "shapes do not match"),
    "matmul inner dims": ("matmul", lambda: {"a": f32(4, 3), "b": f32(5, 2)}, "shapes do not match"),
    "gamma too short": ("layernorm", lambda: {"x": f32(4, 6), "gamma": f32(5), "beta": f32(6)},
                        "shapes do not match"),
    "beta 2-D": ("layernorm", lambda: {"x": f32(4, 6), "gamma": f32(6), "beta": f32(1, 6)}, "must be 1-D"),
    "missing input": ("add", lambda: {"a": f32(8)}, "missing b"),
    "extra input": ("relu", lambda: {"x": f32(8), "y": f32(8)}, "unexpected y"),
    "NaN": ("relu", lambda: {"x": np.array([1, np.nan], np.float32)}, "non-finite"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_before_mojo(case):
    primitive, make, message = BAD_INPUTS[case]
    with pytest.raises(InputError, match=message):
        spy_kernel(primitive).bind(make())


def test_misaligned_array_is_refused_at_the_address():
    """validate_inputs does not look at alignment; the last check before the address does."""
    raw = np.zeros(4 * 9 + 1, dtype=np.uint8)
    x = raw[1:].view(np.float32)                  # float32 data starting at an odd address
    assert not x.flags.aligned
    with pytest.raises(InputError, match="cannot be passed to Mojo"):
        spy_kernel("relu").bind({"x": x})


@pytest.mark.parametrize("case", ["float64", "Fortran order", "mismatched add", "a list"])
def test_prepared_kernel_refuses_before_calling_mojo(backend, monkeypatch, case):
    """The same through the real path: prepare() a built module whose function is a spy."""
    primitive, make, message = BAD_INPUTS[case]
    variant = VARIANTS[primitive][-1]
    monkeypatch.setattr(backend.module(primitive).module, variant, never_called)
    kernel = backend.prepare(primitive, variant)
    with pytest.raises(InputError, match=message):
        kernel.bind(make())


def test_compute_api_refuses_before_calling_mojo(backend, monkeypatch):
    import harness
    monkeypatch.setattr(backend.module("add").module, "parallel", never_called)
    monkeypatch.setitem(backends._instances, "mojo", backend)
    with pytest.raises(InputError, match="must be float32"):
        harness.compute("add", backend="mojo", a=np.ones(4), b=np.ones(4, np.float32))


def test_bind_allocates_the_output_and_keeps_inputs_alive(backend):
    prim = catalogue.PRIMITIVES["matmul"]
    inputs = prim.make_inputs((5, 7, 3), "normal")
    bound = backend.prepare("matmul", "tiled").bind(dict(inputs))
    del inputs                                    # the bound case must hold its own references
    out = bound.run()
    assert out.shape == (5, 3) and out.dtype == np.float32 and out.flags.c_contiguous
    a, b = bound._keep
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)


def test_read_only_inputs_are_fine(backend):
    x = np.arange(10, dtype=np.float32) - 5
    x.flags.writeable = False
    out = backend.prepare("relu", "simd").bind({"x": x}).run()
    assert np.array_equal(out, np.maximum(x, 0))


def test_unknown_variant_is_a_backend_error(backend):
    with pytest.raises(BackendError, match="no variant 'warp' of softmax"):
        backend.prepare("softmax", "warp")


def test_timed_call_is_only_the_mojo_call(backend):
    """bind() took the addresses: call() passes cached Python ints, nothing else."""
    bound = backend.prepare("add", "simd").bind(catalogue.PRIMITIVES["add"].make_inputs((16,)))
    assert all(type(a) is int for a in bound._args)


# ----------------------------------------------------------------------------- availability

def test_mojo_absent_is_unavailable_with_the_install_command(monkeypatch):
    real_find_spec = mojo_build.importlib.util.find_spec
    monkeypatch.setattr(mojo_build.importlib.util, "find_spec",
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
    monkeypatch.setattr(mojo_build.importlib.util, "find_spec", lambda name, *a: object())
    fake_root = types.ModuleType("mojo._package_root")
    fake_root.get_package_root = lambda: tmp_path
    monkeypatch.setitem(sys.modules, "mojo", types.ModuleType("mojo"))    # also where Mojo is absent
    monkeypatch.setitem(sys.modules, "mojo._package_root", fake_root)
    avail = MojoBackend().availability()
    assert not avail.ok and reason in avail.reason
    assert "pip install" in avail.hint


def test_runner_skips_unavailable_mojo_and_runs_the_rest(monkeypatch):
    unavailable = MojoBackend()
    unavailable._unavailable = mojo_build.MojoUnavailable("Mojo is not installed (simulated)")
    monkeypatch.setitem(backends._instances, "mojo", unavailable)
    cfg = RunConfig(primitives=["relu"], backends=["numpy", "mojo"], sizes=[64], checks=False,
                    timing=TimingConfig.quick())
    rows = Runner(cfg).run()
    mojo_rows = [r for r in rows if r["backend"] == "mojo"]
    assert [r["status"] for r in mojo_rows] == ["skip"]
    assert "Mojo is not installed (simulated)" in mojo_rows[0]["reason"]
    assert any(r["backend"] == "numpy" and r["status"] == "pass" for r in rows)


def test_availability_and_environment_describe_the_target(backend):
    avail = backend.availability()
    assert avail.ok and "Mojo" in avail.detail
    tc = backend.toolchain()
    env = backend.environment()
    assert env["mojo"].startswith("Mojo ") and env["mojo_target_cpu"] == tc.target_cpu
    # The width the compiled code reports is the one derived from the target features.
    assert int(backend.module("relu").module.simd_width()) == tc.simd_width_f32
    assert backend.environment()["mojo_simd_width_f32"] == tc.simd_width_f32
