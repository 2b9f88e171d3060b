"""Build the Mojo kernels (mojo_impl/*.mojo) into Python extension modules, cache them
outside the repository, and load them; and read which kernels a source registers,
without building it.

Why an explicit `mojo build --emit shared-lib` and not `import mojo.importer`: the
importer passes no compiler flags (no --target-cpu), hashes every .mojo file of the
folder together (one edit rebuilds all six modules), deletes the cached .so before
compiling (a broken edit leaves nothing importable), keeps its cache inside the source
tree, and reports a compile error as a generic ImportError. Building each module
ourselves gives:

  * a cache key per module: its source and the local .mojo files it imports, the
    compiler version, the SDK location (the .so links to it by absolute path) and the
    effective target (CPU and features); an edit rebuilds that module only;
  * the cache in $KR_CACHE_DIR/mojo, else ~/.cache/kernel-rosetta/mojo (builds are
    machine-specific: never in the repository);
  * the compile time of each module, measured on its own;
  * compile errors as one line (file:line: error) plus the compiler's error lines;
  * a choice of target: KR_MOJO_TARGET_CPU=x86-64-v3 builds for AVX2 on any machine,
    the default is the host CPU (e.g. znver4 with AVX-512).

Builds go to a temporary file and are renamed into place, so two processes building
the same module at once both end up with a complete .so.
"""
from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from ...env import REPO
from ..base import BackendError

SOURCES = REPO / "mojo_impl"
INSTALL = "pip install mojo-compiler==1.2.0 max-core==26.7.0 max-mojo-libs==26.7.0"
INSTALL_HINT = f"{INSTALL} (or: pip install -e '.[mojo]')"
TARGET_CPU_ENV = "KR_MOJO_TARGET_CPU"
BUILD_TIMEOUT_S = 600
KEEP_PER_MODULE = 3             # cached builds kept per module (older ones are removed)
RECIPE = "kernel-rosetta mojo build v2"     # bump to invalidate every cached build
MAX_ERROR_LINES = 40


class MojoUnavailable(Exception):
    """Mojo cannot build here; `reason` says why, `hint` how to fix it."""

    def __init__(self, reason: str, hint: str = INSTALL_HINT):
        super().__init__(reason)
        self.reason, self.hint = reason, hint


class MojoCompileError(BackendError):
    """`mojo build` failed. The first line is the first error as file:line:col: error: ...,
    the following lines are the compiler's diagnostics."""


@dataclass(frozen=True)
class Toolchain:
    version: str                       # "Mojo 1.2.0 (2016d0cd)"
    root: Path                         # the SDK: bin/mojo, lib/*.so, lib/mojo/*.mojoc
    target_cpu: str                    # effective --target-cpu, e.g. "znver4"
    target_features: str              # effective --target-features
    flags: tuple[str, ...] = ()        # extra `mojo build` flags (--target-cpu when chosen)

    @property
    def simd_width_f32(self) -> int:
        """float32 lanes of the widest vector unit the target has (what simd_width_of gives)."""
        features = set(self.target_features.split(","))
        if "+avx512f" in features:
            return 16
        if "+avx" in features:
            return 8
        return 4

    def run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess:
        # mojo.run sets the SDK's environment variables (package root, import path) the
        # way the `mojo` launcher does, for pip and conda/pixi layouts alike.
        from mojo.run import subprocess_run_mojo
        return subprocess_run_mojo(args, capture_output=True, text=True, timeout=timeout)


def find_toolchain() -> Toolchain:
    """The installed Mojo SDK, checked for everything the kernels need; MojoUnavailable if not."""
    if importlib.util.find_spec("mojo") is None:
        raise MojoUnavailable("Mojo is not installed (no `mojo` package in this Python environment)")
    try:
        from mojo._package_root import get_package_root
        root = get_package_root()
    except Exception as e:                                     # a broken or foreign `mojo` package
        raise MojoUnavailable(f"the `mojo` package cannot locate its SDK: {e}") from None
    if root is None or not (root / "bin" / "mojo").exists():
        raise MojoUnavailable("the Mojo compiler is missing (no bin/mojo in the SDK; install mojo-compiler)")
    if not (root / "lib" / "mojo" / "max.mojoc").exists():
        raise MojoUnavailable("max-mojo-libs is not installed (the kernels import max.algorithm.parallelize)")
    if not (root / "lib" / "libAsyncRTMojoBindings.so").exists():
        raise MojoUnavailable("max-core is not installed (parallelize needs libAsyncRTMojoBindings.so at run time)")
    flags = ()
    if os.environ.get(TARGET_CPU_ENV):
        flags = ("--target-cpu", os.environ[TARGET_CPU_ENV])
    probe = Toolchain(version="", root=root, target_cpu="", target_features="", flags=flags)
    try:
        version = probe.run(["--version"], timeout=60)
        target = probe.run(["build", *flags, "--print-effective-target"], timeout=60)
    except (OSError, RuntimeError, subprocess.SubprocessError) as e:
        raise MojoUnavailable(f"the Mojo compiler does not run: {e}") from None
    if version.returncode != 0 or target.returncode != 0:
        out = _clean_lines((version.stderr or "") + (target.stderr or ""))
        raise MojoUnavailable(f"the Mojo compiler does not run: {out[0] if out else 'no output'}")
    cpu = re.search(r"--target-cpu\s+(\S+)", target.stdout)
    features = re.search(r"--target-features\s+(\S+)", target.stdout)
    return Toolchain(version=version.stdout.strip(), root=root, target_cpu=cpu.group(1) if cpu else "unknown",
                     target_features=features.group(1) if features else "", flags=flags)


def cache_dir() -> Path:
    """Where built modules live: $KR_CACHE_DIR/mojo, else ~/.cache/kernel-rosetta/mojo."""
    base = os.environ.get("KR_CACHE_DIR")
    if base:
        return Path(base).expanduser() / "mojo"
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(xdg).expanduser() / "kernel-rosetta" / "mojo"


# ----------------------------------------------------------------------------- registered kernels

# add_variant[relu_call[relu_simd]](m, "relu_simd"), possibly over several lines.
_REGISTRATION = re.compile(r'\badd_variant\[[^()"]*\]\s*\(\s*\w+\s*,\s*"([^"]*)"\s*\)')
_COMMENT = re.compile(r"#[^\n]*")


def registered(source: Path) -> list[str]:
    """The kernel names a .mojo file registers with add_variant (python_entry.mojo), in
    source order: read from the text, so listing variants needs no compiler. A name
    registered twice is an error (the second would replace the first in the module)."""
    text = _COMMENT.sub("", Path(source).read_text(encoding="utf-8"))
    names = _REGISTRATION.findall(text)
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise BackendError(f"{_display(source)} registers {', '.join(twice)} more than once")
    return names


# ----------------------------------------------------------------------------- the cache key

_IMPORT = re.compile(r"^\s*(?:from\s+(\w+)\s+import\b|import\s+(\w+))", re.MULTILINE)


def local_sources(source: Path) -> list[Path]:
    """The source file and every .mojo file beside it that it imports, transitively."""
    seen: dict[Path, None] = {}
    todo = [source.resolve()]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen[path] = None
        for m in _IMPORT.finditer(path.read_text(encoding="utf-8")):
            dep = path.parent / f"{m.group(1) or m.group(2)}.mojo"
            if dep.is_file():
                todo.append(dep.resolve())
    return sorted(seen)


def build_key(source: Path, toolchain: Toolchain) -> str:
    h = hashlib.sha256()
    for part in (RECIPE, toolchain.version, str(toolchain.root), toolchain.target_cpu,
                 toolchain.target_features, " ".join(toolchain.flags)):
        h.update(part.encode() + b"\0")
    for path in local_sources(source):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


# ----------------------------------------------------------------------------- build and load

@dataclass
class Built:
    module: ModuleType
    path: Path
    seconds: float                     # compile + load, or only the load for a cache hit
    cached: bool
    warnings: list[str] = field(default_factory=list)


def build_module(source: Path, toolchain: Toolchain, cache: Path | None = None) -> Built:
    """Compile `source` (or find it in the cache) and load it as a Python module."""
    source = Path(source).resolve()
    cache = cache or cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BackendError(f"cannot create the Mojo build cache {cache}: {e.strerror or e}") from None
    target = cache / f"{source.stem}-{build_key(source, toolchain)[:16]}.so"
    t0 = time.perf_counter()
    if target.exists():
        try:
            module = load_extension(source.stem, target)
            os.utime(target)                                   # mtime = last use, for pruning
            return Built(module, target, time.perf_counter() - t0, cached=True)
        except BackendError:                                   # damaged (e.g. a full disk): rebuild it
            target.unlink(missing_ok=True)
    warnings = _compile(source, toolchain, target)
    _prune(cache, source.stem, keep=target)
    module = load_extension(source.stem, target)
    return Built(module, target, time.perf_counter() - t0, cached=False, warnings=warnings)


def _compile(source: Path, toolchain: Toolchain, target: Path) -> list[str]:
    """mojo build into a temporary file, renamed to `target` when complete; the warnings."""
    tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.so")
    try:
        proc = toolchain.run(["build", str(source), "--emit", "shared-lib", "-o", str(tmp), *toolchain.flags],
                             timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        raise MojoCompileError(f"mojo build timed out after {BUILD_TIMEOUT_S} s: {_display(source)}") from None
    output = (proc.stderr or "") + (proc.stdout or "")
    if proc.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        raise MojoCompileError(compile_error_message(source, output))
    os.replace(tmp, target)
    return [line for line in _clean_lines(output) if ": warning: " in line]


# Loading the first Mojo module starts Mojo's CPython interop, which setenv()s these in
# the C environment, behind os.environ's back: PYTHONEXECUTABLE (whatever `python3` is
# first on PATH), PYTHONPATH (":") and MOJO_PYTHON_LIBRARY. Every Python subprocess
# started afterwards, even `[sys.executable, ...]`, would run outside this virtual
# environment. Calls and later loads do not set them again (measured).
_ENV_SET_BY_MOJO = ("PYTHONEXECUTABLE", "PYTHONPATH", "MOJO_PYTHON_LIBRARY")


def load_extension(name: str, path: Path) -> ModuleType:
    """Load a built .so as the extension module `name` (its PyInit_<name>), without
    putting it in sys.modules: a rebuilt module is a different file, loaded afresh."""
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    try:
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    except ImportError as e:
        raise BackendError(f"cannot load the Mojo module {path.name}: {e}") from None
    finally:
        for key in _ENV_SET_BY_MOJO:                   # os.environ still holds the values from before
            if key in os.environ:
                os.putenv(key, os.environ[key])
            else:
                os.unsetenv(key)
    return module


def _prune(cache: Path, stem: str, keep: Path) -> None:
    """Remove all but the KEEP_PER_MODULE most recently used builds of one module."""
    builds = sorted(cache.glob(f"{stem}-*.so"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in builds if p != keep][KEEP_PER_MODULE - 1:]:
        old.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- compiler output

_DIAGNOSTIC = re.compile(r"^\S[^:]*\.mojo:\d+:\d+: (error|warning|note): ")
_MOJO_PATH = re.compile(r"(?<![\w.])(/[^\s:]+\.mojo)")


def _display(path: Path) -> str:
    """A path as the user would type it: relative to the working directory or the repo."""
    for base in (Path.cwd(), REPO):
        try:
            return str(Path(path).resolve().relative_to(base.resolve()))
        except ValueError:
            pass
    return str(path)


def _clean_lines(output: str) -> list[str]:
    """Compiler output without blank lines and crash-reporter noise, .mojo paths made readable."""
    return [_MOJO_PATH.sub(lambda m: _display(Path(m.group(1))), line.rstrip())
            for line in output.splitlines() if line.strip() and "Crashpad" not in line]


def _diagnostic_blocks(lines: list[str]) -> list[tuple[str, ...]]:
    """Group lines into diagnostics (an optional "Imported from" line, the file:line:
    message, then its source line and caret), each distinct diagnostic once: the compiler
    repeats a diagnostic for every instantiation of the code it is in."""
    blocks: list[list[str]] = []
    for line in lines:
        starts = line.startswith("Imported from") or (
            _DIAGNOSTIC.match(line) and not (blocks and blocks[-1][-1].startswith("Imported from")))
        if starts or not blocks:
            blocks.append([line])
        else:
            blocks[-1].append(line)
    return list(dict.fromkeys(tuple(b) for b in blocks))


def compile_error_message(source: Path, output: str) -> str:
    """First line: the first error, file:line:col: error: message. Then the diagnostics."""
    lines = [line for line in _clean_lines(output) if "failed to parse the provided Mojo source" not in line]
    errors = list(dict.fromkeys(line for line in lines if _DIAGNOSTIC.match(line) and ": error: " in line))
    if errors:
        first = errors[0]
    else:                                                      # e.g. a linker or driver error
        first = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "no output")
    summary = f"mojo build failed: {first}" + (f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else "")
    body = [line for block in _diagnostic_blocks(lines) for line in block]
    if len(body) > MAX_ERROR_LINES:
        body = body[:MAX_ERROR_LINES] + [f"... ({len(body) - MAX_ERROR_LINES} more lines)"]
    return "\n".join([summary, *body])
