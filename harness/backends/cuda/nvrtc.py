"""NVRTC: CUDA C source -> CUBIN for one GPU architecture, cached on disk. Needs no GPU.

    compiled = compile_cubin(source, "cuda_impl/softmax.cu", arch="sm_90")
    compiled.cubin, compiled.seconds, compiled.cached, compiled.resources["softmax_warp_online"]

Why CUBIN and not PTX: a CUBIN for the GPU's own sm_XY loads on any driver that supports
that GPU, while PTX from a newer NVRTC than the driver is rejected
(CUDA_ERROR_UNSUPPORTED_PTX_VERSION) - the PyPI NVRTC is often newer than the driver.

The cache key is a hash of everything that changes the binary: the source text, the
options, the architecture, the NVRTC version (and a format number for this module). The
ptxas log (registers, shared memory, spills) is cached beside the CUBIN, so a cache hit
still reports resources. The cache lives outside the repository: $KR_CACHE_DIR, else
$XDG_CACHE_HOME/kernel-rosetta/cuda, else ~/.cache/kernel-rosetta/cuda.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CACHE_FORMAT = 1
# -lineinfo: source lines in the binary for profilers (Nsight Compute), no run-time cost.
# --ptxas-options=-v: registers, shared memory and spills per kernel, in the log.
# Deliberately absent: --use_fast_math (approximate expf/tanhf/division break the tolerances)
# and -O3 (NVRTC rejects it; it optimises fully by default).
DEFAULT_OPTIONS = ("-lineinfo", "--ptxas-options=-v")
ARCH_RE = re.compile(r"sm_\d{2,3}[af]?")


class NvrtcUnavailable(RuntimeError):
    """cuda-bindings or the NVRTC library itself is missing."""


class CompileError(RuntimeError):
    """NVRTC rejected a source. str(): the first error on line one, then the whole log."""

    def __init__(self, filename: str, arch: str, log: str, status: str = ""):
        self.filename, self.arch, self.log = filename, arch, log.strip()
        errors = [ln.strip() for ln in self.log.splitlines() if "error" in ln]
        first = errors[0] if errors else (self.log.splitlines()[0] if self.log else status or "unknown error")
        count = sum(1 for ln in errors if ": error" in ln or ln.startswith("error")) or len(errors)
        summary = f"{first}  [NVRTC, {arch}; {count} error{'s' if count != 1 else ''} in {filename}]"
        super().__init__(summary + ("\n" + self.log if self.log else ""))


@dataclass(frozen=True)
class Resources:
    """What ptxas reported for one kernel."""
    registers: int
    smem_bytes: int = 0                 # static shared memory (dynamic comes at launch)
    stack_bytes: int = 0
    spill_stores: int = 0
    spill_loads: int = 0

    def describe(self) -> str:
        spills = "no spills" if not (self.spill_stores or self.spill_loads) else (
            f"SPILLS {self.spill_stores} B stored / {self.spill_loads} B loaded")
        return f"{self.registers:3d} registers, {self.smem_bytes:6d} B static smem, {spills}"


@dataclass
class Compiled:
    cubin: bytes
    log: str
    seconds: float                      # NVRTC time, or the cache read when cached
    cached: bool
    arch: str
    nvrtc_version: tuple[int, int]
    key: str
    resources: dict[str, Resources] = field(default_factory=dict)


# ----------------------------------------------------------------------------- NVRTC

def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as e:
        raise NvrtcUnavailable(f"cuda-bindings is not installed ({e})") from None
    return nvrtc


def nvrtc_version() -> tuple[int, int]:
    """(major, minor) of the NVRTC library that will compile; NvrtcUnavailable if none loads."""
    nvrtc = _nvrtc()
    try:
        err, major, minor = nvrtc.nvrtcVersion()
    except RuntimeError as e:                      # cuda-pathfinder: libnvrtc not found
        raise NvrtcUnavailable(f"the NVRTC library was not found ({str(e).splitlines()[0]})") from None
    if int(err) != 0:
        raise NvrtcUnavailable(f"nvrtcVersion failed: {err}")
    return int(major), int(minor)


def check_arch(arch: str) -> str:
    if not ARCH_RE.fullmatch(arch or ""):
        raise ValueError(f"bad CUDA architecture {arch!r}: expected sm_<major><minor>, e.g. sm_90 or sm_80")
    return arch


def _check(nvrtc, result, call: str):
    err = result[0]
    if int(err) != 0:
        raise RuntimeError(f"{call} failed: {err}")
    return result[1:]


def _nvrtc_compile(source: str, filename: str, arch: str, options: tuple[str, ...]) -> tuple[bytes | None, str]:
    """(cubin or None, log). A failed compile returns None and the log; never raises for it."""
    nvrtc = _nvrtc()
    (prog,) = _check(nvrtc, nvrtc.nvrtcCreateProgram(source.encode(), filename.encode(), 0, [], []),
                     "nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture={arch}".encode(), *(o.encode() for o in options)]
        (status,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        (size,) = _check(nvrtc, nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
        buf = b" " * size
        _check(nvrtc, nvrtc.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
        log = buf.rstrip(b"\x00 ").decode(errors="replace")
        if int(status) != 0:
            return None, log or str(status)
        (size,) = _check(nvrtc, nvrtc.nvrtcGetCUBINSize(prog), "nvrtcGetCUBINSize")
        cubin = b" " * size
        _check(nvrtc, nvrtc.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
        return cubin, log
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


# ----------------------------------------------------------------------------- ptxas log

_ENTRY = re.compile(r"Compiling entry function '([^']+)'")
_REGS = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas(log: str) -> dict[str, Resources]:
    """Per-kernel resources from an NVRTC log compiled with --ptxas-options=-v."""
    found: dict[str, dict] = {}
    current = None
    for line in log.splitlines():
        m = _ENTRY.search(line)
        if m:
            current = found.setdefault(m.group(1), {"registers": 0})
            continue
        if current is None:
            continue
        if (m := _FRAME.search(line)):
            current.update(stack_bytes=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        if (m := _REGS.search(line)):
            current["registers"] = int(m.group(1))
            if (s := _SMEM.search(line)):
                current["smem_bytes"] = int(s.group(1))
    return {name: Resources(**fields) for name, fields in found.items()}


# ----------------------------------------------------------------------------- the cache

def cache_dir() -> Path:
    if os.environ.get("KR_CACHE_DIR"):
        return Path(os.environ["KR_CACHE_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "kernel-rosetta" / "cuda"


def cache_key(source: str, options: tuple[str, ...], arch: str, version: tuple[int, int]) -> str:
    h = hashlib.sha256()
    for part in (f"format={CACHE_FORMAT}", f"nvrtc={version[0]}.{version[1]}", f"arch={arch}",
                 "options=" + "\x1f".join(options), source):
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def compile_cubin(source: str, filename: str, arch: str, options: tuple[str, ...] = DEFAULT_OPTIONS,
                  use_cache: bool = True) -> Compiled:
    """Compile (or load from the cache) one .cu source for `arch`.

    filename is what NVRTC names in its messages (use the repository-relative path).
    use_cache=False always compiles (the result is still written to the cache).
    Raises CompileError with the NVRTC log, NvrtcUnavailable when NVRTC is missing.
    """
    check_arch(arch)
    version = nvrtc_version()
    key = cache_key(source, tuple(options), arch, version)
    folder = cache_dir()
    cubin_path, log_path = folder / f"{key}.cubin", folder / f"{key}.log"
    if use_cache:
        t0 = time.perf_counter()
        try:
            cubin, log = cubin_path.read_bytes(), log_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            cubin = None
        if cubin:
            return Compiled(cubin, log, time.perf_counter() - t0, True, arch, version, key, parse_ptxas(log))
    t0 = time.perf_counter()
    cubin, log = _nvrtc_compile(source, filename, arch, tuple(options))
    seconds = time.perf_counter() - t0
    if cubin is None:
        raise CompileError(filename, arch, log)
    try:                                           # a read-only cache only costs recompiles
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(log_path, log.encode())
        _write_atomic(cubin_path, cubin)           # the CUBIN last: it is what marks a hit
    except OSError:
        pass
    return Compiled(cubin, log, seconds, False, arch, version, key, parse_ptxas(log))
