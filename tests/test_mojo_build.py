"""Building the Mojo modules: compile errors reach the user as one clear line with the
compiler's error lines; the cache is keyed by what a build depends on, lives outside
the repository, and is reused or rebuilt as it should be.

The build tests work on copies of mojo_impl/ files in a temporary directory, with a
temporary cache, so they never touch the real sources or the user's cache.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import backends
from harness.backends.mojo import args as block_args
from harness.backends.mojo import build as mojo_build
from harness.backends.mojo.backend import MojoBackend
from harness.core import catalogue
from harness.core.runner import RunConfig, Runner
from harness.core.timing import TimingConfig
from harness.env import REPO

pytestmark = pytest.mark.mojo

SOURCES = REPO / "mojo_impl"


@pytest.fixture(scope="module")
def toolchain():
    try:
        return mojo_build.find_toolchain()
    except mojo_build.MojoUnavailable as e:
        pytest.skip(f"Mojo is not available: {e.reason} (to install: {e.hint})")


@pytest.fixture
def sources(tmp_path):
    """A private copy of mojo_impl/ (the .mojo files) to edit and break."""
    src = tmp_path / "mojo_impl"
    src.mkdir()
    for f in SOURCES.glob("*.mojo"):
        shutil.copy(f, src / f.name)
    return src


def insert_line(path: Path, after: str, text: str) -> int:
    """Insert `text` after the first line starting with `after`; return its 1-based line number."""
    lines = path.read_text().splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith(after)) + 1
    lines.insert(i, text)
    path.write_text("\n".join(lines) + "\n")
    return i + 1


# ----------------------------------------------------------------------------- compile errors

def test_compile_error_is_one_clear_line_with_the_compiler_lines(toolchain, sources, tmp_path):
    line = insert_line(sources / "relu.mojo", "def relu_scalar(", "    var oops = undefined_name + 1")
    with pytest.raises(mojo_build.MojoCompileError) as info:
        mojo_build.build_module(sources / "relu.mojo", toolchain, tmp_path / "cache")
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith("mojo build failed: ")
    assert f"relu.mojo:{line}:" in first and "error:" in first and "undefined_name" in first
    assert "undefined_name + 1" in message                # the compiler's source line comes along
    assert "Crashpad" not in message
    assert not list((tmp_path / "cache").glob("*.so"))    # nothing half-built is left behind


def test_a_broken_module_fails_only_its_primitive(toolchain, sources, tmp_path, monkeypatch):
    """Through the runner: softmax does not compile, relu (same sources) and numpy still run."""
    insert_line(sources / "softmax.mojo", "def softmax_scalar(", "    var s: Float32 = \"not a number\"")
    broken = MojoBackend(sources=sources, cache=tmp_path / "cache")
    monkeypatch.setitem(backends._instances, "mojo", broken)
    cfg = RunConfig(primitives=["softmax", "relu"], backends=["numpy", "mojo"], sizes=[64], checks=False,
                    timing=TimingConfig.quick())
    rows = Runner(cfg).run()
    softmax = [r for r in rows if r["backend"] == "mojo" and r["primitive"] == "softmax"]
    assert softmax and all(r["status"] == "error" for r in softmax)
    assert all("prepare failed: MojoCompileError: mojo build failed: " in r["reason"] and "softmax.mojo:" in r["reason"]
               for r in softmax)
    assert all(r["status"] == "pass" for r in rows if r["primitive"] == "relu" or r["backend"] == "numpy")
    # The failed build is remembered: every softmax variant reported it, the compiler ran once.
    assert len(broken._errors) == 1


def test_build_report_lists_variants_and_errors(toolchain, sources, tmp_path):
    insert_line(sources / "gelu.mojo", "def gelu_scalar(", "    return 42")
    rows = MojoBackend(sources=sources, cache=tmp_path / "cache").build_report(primitives=["gelu", "relu"])
    gelu = [r for r in rows if r["primitive"] == "gelu"]
    relu = [r for r in rows if r["primitive"] == "relu"]
    assert len(gelu) == 1 and gelu[0]["variant"] == "*" and not gelu[0]["ok"]
    assert "gelu.mojo:" in gelu[0]["detail"].splitlines()[0]
    assert [r["variant"] for r in relu] == ["scalar", "simd", "parallel"]
    assert [r["function"] for r in relu] == ["relu_scalar", "relu_simd", "relu_parallel"]
    assert all(r["ok"] and r["compile_s"] > 0 and r["cached"] is False for r in relu)
    assert all("compiled in" in r["detail"] for r in relu)


def test_build_report_checks_the_module_exports_what_the_source_lists(toolchain, sources, tmp_path):
    """A registration the source reader cannot see (here: def_function behind a helper) is a
    kernel the harness would never run: the report fails it. A listed name the module
    does not export fails too."""
    relu = sources / "relu.mojo"
    text = relu.read_text()
    text = text.replace('add_variant[relu_call[relu_parallel]](m, "relu_parallel")',
                        'hidden[relu_call[relu_parallel]](m)')
    text = text.replace("@export", 'def hidden[u: Unpack](mut m: PythonModuleBuilder) raises:\n'
                                   '    m.def_function[entry[u]]("relu_parallel", docstring="unlisted")\n\n\n'
                                   'def never_called(mut m: PythonModuleBuilder) raises:\n'
                                   '    add_variant[relu_call[relu_simd]](m, "relu_ghost")\n\n\n@export')
    text = text.replace("from python_entry import Args,", "from std.python.bindings import PythonModuleBuilder\n"
                                                          "from python_entry import Unpack, entry, Args,")
    relu.write_text(text)
    rows = MojoBackend(sources=sources, cache=tmp_path / "cache").build_report(primitives=["relu"])
    assert [(r["variant"], r["ok"]) for r in rows] == [("ghost", False), ("scalar", True), ("simd", True),
                                                       ("?", False)]
    assert rows[0]["detail"] == "the built module does not export 'relu_ghost'"
    assert "exports relu_parallel, which no add_variant line registers" in rows[-1]["detail"]


# ----------------------------------------------------------------------------- the cache

def test_second_build_is_a_cache_hit_and_an_edit_rebuilds(toolchain, sources, tmp_path):
    cache = tmp_path / "cache"
    relu = sources / "relu.mojo"
    first = mojo_build.build_module(relu, toolchain, cache)
    assert not first.cached and first.path.parent == cache
    again = mojo_build.build_module(relu, toolchain, cache)
    assert again.cached and again.path == first.path and again.seconds < first.seconds
    # Editing an unrelated module changes nothing for relu ...
    insert_line(sources / "add.mojo", "# add:", "# an edit elsewhere")
    assert mojo_build.build_module(relu, toolchain, cache).cached
    # ... editing relu, or the helper it imports, rebuilds it.
    insert_line(relu, "# relu:", "# an edit")
    edited = mojo_build.build_module(relu, toolchain, cache)
    assert not edited.cached and edited.path != first.path
    insert_line(sources / "python_entry.mojo", "# python_entry:", "# an edit")
    assert not mojo_build.build_module(relu, toolchain, cache).cached
    # The rebuilt module is the one loaded: it still computes relu.
    x = np.array([-1, 2], np.float32)
    y = np.empty_like(x)
    edited.module.relu_simd(block_args.pack(catalogue.get("relu"), {"x": x, "y": y}, (2,), {}).ctypes.data)
    assert y.tolist() == [0, 2]


def test_a_damaged_cached_build_is_rebuilt(toolchain, sources, tmp_path):
    """In another process: this one keeps every extension it loaded, by path."""
    cache = tmp_path / "cache"
    first = mojo_build.build_module(sources / "relu.mojo", toolchain, cache)
    # Damage it as a new file (e.g. cut short by a full disk) swapped in by rename: this
    # process has the old .so mapped, and overwriting a mapped file in place would crash it
    # with SIGBUS when the library's code or exit handlers next touch the truncated pages.
    damaged = first.path.with_name(first.path.name + ".damaged")
    damaged.write_bytes(b"not a shared library")
    os.replace(damaged, first.path)
    script = ("import sys; from pathlib import Path; from harness.backends.mojo import build as b; "
              "r = b.build_module(Path(sys.argv[1]), b.find_toolchain(), Path(sys.argv[2])); "
              "print(r.cached, r.path.name, int(r.module.simd_width()))")
    out = subprocess.run([sys.executable, "-c", script, str(sources / "relu.mojo"), str(cache)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    cached, name, width = out.stdout.split()
    assert cached == "False" and name == first.path.name and int(width) == toolchain.simd_width_f32


def test_loading_mojo_leaves_subprocesses_in_this_environment(toolchain):
    """Mojo's interop setenv()s PYTHONEXECUTABLE and PYTHONPATH when the first module
    loads; load_extension undoes that, so `[sys.executable, ...]` still means this venv."""
    MojoBackend().module("relu")
    probe = "import os, sys; print(os.environ.get('PYTHONEXECUTABLE'), os.environ.get('PYTHONPATH'), sys.prefix)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    executable, pythonpath, prefix = out.stdout.split()
    assert executable == str(os.environ.get("PYTHONEXECUTABLE"))
    assert pythonpath == str(os.environ.get("PYTHONPATH"))
    assert prefix == sys.prefix


def test_backend_rebuilds_when_the_source_changes_in_process(toolchain, sources, tmp_path):
    backend = MojoBackend(sources=sources, cache=tmp_path / "cache")
    k1 = backend.prepare("relu", "simd")
    k2 = backend.prepare("relu", "parallel")
    assert k1.compile_cached is False and k2.compile_s == k1.compile_s       # one compile per module
    assert MojoBackend(sources=sources, cache=tmp_path / "cache").prepare("relu", "simd").compile_cached
    insert_line(sources / "relu.mojo", "# relu:", "# an edit")
    assert backend.prepare("relu", "simd").compile_cached is False


def test_cache_location_is_outside_the_repository(monkeypatch, tmp_path):
    monkeypatch.setenv("KR_CACHE_DIR", str(tmp_path / "kr"))
    assert mojo_build.cache_dir() == tmp_path / "kr" / "mojo"
    monkeypatch.delenv("KR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mojo_build.cache_dir() == tmp_path / "xdg" / "kernel-rosetta" / "mojo"
    monkeypatch.delenv("XDG_CACHE_HOME")
    default = mojo_build.cache_dir()
    assert default == Path.home() / ".cache" / "kernel-rosetta" / "mojo"
    assert REPO not in default.parents


def test_key_covers_local_imports_only():
    deps = [p.name for p in mojo_build.local_sources(SOURCES / "softmax.mojo")]
    assert deps == ["python_entry.mojo", "softmax.mojo"]


# ----------------------------------------------------------------------------- messages (no compiler needed)

COMPILER_OUTPUT = """\
Failed to initialize Crashpad.  Crash reporting will not be available.
{d}/relu.mojo:14:36: error: 'relu_call' parameter 'kernel' has 'ReluKernel' type
        add_variant[relu_call[relu_scalar]](m, "relu_scalar")
                              ^~~~~~~~~~~
Imported from {d}/relu.mojo:4:
{d}/python_entry.mojo:7:5: note: function declared here
def add_variant[unpack: Unpack](mut m: PythonModuleBuilder, name: StringSpan[ImmStaticOrigin]) raises:
    ^
{d}/relu.mojo:14:36: error: 'relu_call' parameter 'kernel' has 'ReluKernel' type
        add_variant[relu_call[relu_scalar]](m, "relu_scalar")
                              ^~~~~~~~~~~
Imported from {d}/relu.mojo:4:
{d}/python_entry.mojo:7:5: note: function declared here
def add_variant[unpack: Unpack](mut m: PythonModuleBuilder, name: StringSpan[ImmStaticOrigin]) raises:
    ^
{d}/relu.mojo:20:1: error: use of unknown declaration 'foo'
foo()
^~~
/usr/bin/mojo: error: failed to parse the provided Mojo source module
"""


def test_compile_error_message_from_canned_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "mojo_impl"
    message = mojo_build.compile_error_message(d / "relu.mojo", COMPILER_OUTPUT.format(d=d))
    lines = message.splitlines()
    assert lines[0] == ("mojo build failed: mojo_impl/relu.mojo:14:36: error: 'relu_call' parameter "
                        "'kernel' has 'ReluKernel' type (and 1 more errors)")
    assert str(tmp_path) not in message                    # paths shown relative to where you are
    assert sum("relu.mojo:14:36" in line for line in lines) == 2   # the summary + one copy of the repeat
    assert "mojo_impl/relu.mojo:20:1: error: use of unknown declaration 'foo'" in lines
    assert not any("Crashpad" in line or "failed to parse" in line for line in lines)


def test_build_report_for_a_primitive_without_a_mojo_file(toolchain, tmp_path):
    rows = MojoBackend(sources=tmp_path, cache=tmp_path / "cache").build_report(primitives=["relu"])
    assert rows == [dict(primitive="relu", variant="", ok=True, detail="no Mojo implementation")]
