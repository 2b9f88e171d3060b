"""Run header-free CUDA C kernels on the CPU, for tests on machines without a GPU.

    from cuda_emu import run_kernel
    run_kernel(source, "vec_add", grid=4, block=256, shared_bytes=0,
               args=[a, b, c, np.int32(n)])

The kernel source is compiled with g++ against ``emu_runtime.h`` (which maps
CUDA's keywords, built-ins and intrinsics to plain C++ and runs every CUDA
thread of a block as a fiber), cached on disk, and launched in a forked child
process.  Arrays are device buffers: they are copied into memory that sits
right in front of a no-access guard page, the kernel writes them, and they
are copied back into the caller's arrays.  A crash, an out-of-bounds access,
a barrier deadlock or a hang becomes an ``EmulatorError`` that names the
kernel; the test process survives all of them.

See README.md for what the emulator checks and what it cannot.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import mmap
import os
import platform
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "run_kernel",
    "compile_kernel",
    "kernel_names",
    "EmulatorError",
    "CompileError",
    "LaunchConfigError",
    "last_launch_stats",
]

_HERE = Path(__file__).resolve().parent
_SHIM = _HERE / "emu_runtime.h"

CXX = os.environ.get("CUDA_EMU_CXX", "g++")


def _host_has_fma() -> bool:
    try:
        return platform.machine() == "x86_64" and " fma " in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


# -O1 (or CUDA_EMU_OPT): kernels compile in about 0.3 s and run fast enough.
#  Measured for the 1000x1000x1000 register-tiled matmul of bench.py on a
#  2-core EPYC VM: -O1 1.9 s, -O2 1.2 s, but -O2 compiles ~2x slower, and a
#  test suite compiles far more kernels than it runs big ones.
# -mfma (x86-64 hosts that have it): fmaf() becomes one instruction instead
#  of a libm call - 4.3 s -> 1.9 s for that matmul.  Numerics do not change:
#  fmaf is correctly rounded either way, and the C++20 mode keeps
#  -ffp-contract=off, so a*b+c is never fused behind the kernel's back.
# -fno-strict-aliasing: kernels reinterpret float* as float4* all the time.
# -fno-math-errno: lets sqrtf & co. become single instructions, as on a GPU.
# -fvisibility=hidden: several kernel libraries live in one process; only the
#  three entry points may be visible, so their internals never mix.
# -fstack-clash-protection: a function with a big frame touches its stack
#  page by page, so it hits the fiber's guard page instead of jumping over it
#  into the neighbouring fiber's stack - overflows are reported, not silent.
# CUDA_EMU_CXXFLAGS: extra flags, e.g. "-g" to debug a kernel with
#  isolate=False under gdb, or "-DEMU_USE_UCONTEXT" to try the portable
#  context switch.
CXXFLAGS = (
    "-std=c++20", os.environ.get("CUDA_EMU_OPT", "-O1"), *(("-mfma",) if _host_has_fma() else ()),
    "-shared", "-fPIC", "-fvisibility=hidden", "-fno-strict-aliasing", "-fno-math-errno",
    "-fstack-clash-protection",
    "-Wno-unknown-pragmas",  # `#pragma unroll`
    *os.environ.get("CUDA_EMU_CXXFLAGS", "").split(),
)

PAGE = mmap.PAGESIZE
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK_DIM = (1024, 1024, 64)
MAX_GRID_DIM = (2**31 - 1, 65535, 65535)
SHARED_LIMIT = 48 * 1024          # static + dynamic, without opting in
SHARED_LIMIT_OPT_IN = 227 * 1024  # sm_90 (H100/H200) after cudaFuncSetAttribute
DEFAULT_STACK_KIB = 64
DEFAULT_TIMEOUT_S = 60.0

#: Counters of the most recent launch (fiber resumes, blocks, wall seconds),
#: for speed measurements.
last_launch_stats: dict = {}


class EmulatorError(RuntimeError):
    """The kernel failed: crash, out-of-bounds access, deadlock, timeout..."""


class CompileError(EmulatorError):
    """g++ rejected the kernel source (the message holds its diagnostics)."""


class LaunchConfigError(EmulatorError, ValueError):
    """A launch configuration CUDA itself would reject."""


# --------------------------------------------------------------------------
# ctypes mirrors of the structures in emu_runtime.h (keep them in step).
# --------------------------------------------------------------------------
class _Launch(ctypes.Structure):
    _fields_ = [
        ("args", ctypes.POINTER(ctypes.c_void_p)),
        ("grid", ctypes.c_uint32 * 3),
        ("block", ctypes.c_uint32 * 3),
        ("dyn_shared_bytes", ctypes.c_uint64),
        ("stack_bytes", ctypes.c_uint64),
        ("catch_signals", ctypes.c_int32),
    ]


class _Status(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_int32),
        ("signo", ctypes.c_int32),
        ("fault_kind", ctypes.c_int32),
        ("in_thread", ctypes.c_int32),
        ("fault_addr", ctypes.c_uint64),
        ("fault_offset", ctypes.c_int64),
        ("block", ctypes.c_uint32 * 3),
        ("thread", ctypes.c_uint32 * 3),
        ("resumes", ctypes.c_uint64),
        ("blocks", ctypes.c_uint64),
        ("msg", ctypes.c_char * 4096),
    ]


class _ParamInfo(ctypes.Structure):
    _fields_ = [(n, ctypes.c_int32) for n in ("is_pointer", "is_const", "kind", "size", "lanes")]


_EMU_OK, _EMU_ERROR, _EMU_CRASH = 0, 1, 2
_FAULT_STACK, _FAULT_SHARED = 1, 2
_KIND_OTHER, _KIND_SINT, _KIND_UINT, _KIND_FLOAT, _KIND_BOOL, _KIND_VOID = range(6)
_DTYPE_OF = {
    (_KIND_SINT, 1): np.int8, (_KIND_SINT, 2): np.int16,
    (_KIND_SINT, 4): np.int32, (_KIND_SINT, 8): np.int64,
    (_KIND_UINT, 1): np.uint8, (_KIND_UINT, 2): np.uint16,
    (_KIND_UINT, 4): np.uint32, (_KIND_UINT, 8): np.uint64,
    (_KIND_FLOAT, 4): np.float32, (_KIND_FLOAT, 8): np.float64,
    (_KIND_BOOL, 1): np.bool_,
}

# --------------------------------------------------------------------------
# Parsing just enough of the source: kernel names, parameter names (for
# messages; the compiler reports the parameter *types*), __launch_bounds__.
# --------------------------------------------------------------------------
_COMMENT_OR_LITERAL = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'', re.S)
_ATTRIBUTE = re.compile(r"\s*(__launch_bounds__|__attribute__|__align__|alignas)\s*\(")
_IDENT = re.compile(r"\s*([A-Za-z_]\w*)")
_OPEN = re.compile(r"\s*\(")
_DYN_SMEM = re.compile(r"\bextern\s+__shared__\b([^;{}\[\]]*)\[\s*\]\s*;")


@dataclass
class _Param:
    text: str          # the declaration as written, e.g. "const float* __restrict__ x"
    name: str | None


@dataclass
class _KernelDecl:
    name: str
    params: list[_Param]
    launch_bounds: str | None  # the first __launch_bounds__ argument, as text


def _blank(src: str) -> str:
    """Comments and string literals replaced by spaces (same length, same lines)."""
    return _COMMENT_OR_LITERAL.sub(lambda m: re.sub(r"[^\n]", " ", m.group()), src)


def _closing_paren(code: str, open_pos: int) -> int:
    depth = 0
    for i in range(open_pos, len(code)):
        if code[i] == "(":
            depth += 1
        elif code[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced parentheses in kernel source")


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "(<[":
            depth += 1
        elif ch in ")>]":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


_TYPE_WORDS = {"const", "volatile", "unsigned", "signed", "int", "long", "short", "char", "float",
               "double", "bool", "void", "__restrict__", "__restrict", "restrict", "size_t"}


def _parse_param(text: str) -> _Param:
    text = " ".join(text.split())
    m = re.search(r"([A-Za-z_]\w*)\s*(?:\[[^\]]*\]\s*)*$", text)
    idents = re.findall(r"[A-Za-z_]\w*", text)
    if m and len(idents) >= 2 and m.group(1) not in _TYPE_WORDS:
        return _Param(text, m.group(1))
    return _Param(text, None)


def _parse_kernels(source: str) -> dict[str, _KernelDecl]:
    code = _blank(source)
    kernels: dict[str, _KernelDecl] = {}
    for m in re.finditer(r"\b__global__\b", code):
        pos, name, bounds = m.end(), None, None
        while True:
            a = _ATTRIBUTE.match(code, pos)
            if a:
                close = _closing_paren(code, a.end() - 1)
                if a.group(1) == "__launch_bounds__":
                    bounds = _split_top_level(code[a.end():close])[0]
                pos = close + 1
                continue
            ident = _IDENT.match(code, pos)
            if ident:
                name, pos = ident.group(1), ident.end()
                continue
            paren = _OPEN.match(code, pos)
            if paren and name:
                close = _closing_paren(code, paren.end() - 1)
                inner = code[paren.end():close].strip()
                params = [] if inner in ("", "void") else [_parse_param(p) for p in _split_top_level(inner)]
                kernels[name] = _KernelDecl(name, params, bounds)
            break
    return kernels


def kernel_names(source: str) -> list[str]:
    """The __global__ functions declared in `source`."""
    return list(_parse_kernels(source))


def _rewrite_dynamic_shared(source: str) -> str:
    """`extern __shared__ T name[];` -> a reference to the launch's buffer.

    Matches are found on the comment-blanked text and applied to the original
    at the same offsets; newlines are kept so compiler line numbers still
    match the source.
    """
    out, last = [], 0
    for m in _DYN_SMEM.finditer(_blank(source)):
        decl = re.sub(r"\b(?:__align__|alignas)\s*\([^)]*\)", " ", m.group(1))
        decl = re.sub(r"__attribute__\s*\(\(.*?\)\)", " ", decl)
        words = decl.split()
        if len(words) < 2:
            continue  # leave it; the compiler will point at it
        name, ctype = words[-1], " ".join(words[:-1])
        repl = f"{ctype}* const& {name} = reinterpret_cast<{ctype}* const&>(::emu::dyn_smem_ptr);"
        out += [source[last:m.start()], repl, "\n" * m.group().count("\n")]
        last = m.end()
    out.append(source[last:])
    return "".join(out)


def _generated_source(source: str, decl: _KernelDecl) -> str:
    k = decl.name
    bound = f"({decl.launch_bounds})" if decl.launch_bounds else str(MAX_THREADS_PER_BLOCK)
    return (
        '#include "emu_runtime.h"\n'
        f'#line 1 "{k}.cu"\n'
        f"{_rewrite_dynamic_shared(source)}\n"
        '#line 1 "cuda_emu_entry_points"\n'
        f'extern "C" EMU_EXPORT int emu_describe(EmuParamInfo* out, int cap) '
        f"{{ return emu::describe(&{k}, out, cap); }}\n"
        f'extern "C" EMU_EXPORT int emu_launch(const EmuLaunch* l, EmuStatus* st) '
        f"{{ return emu::launch(&{k}, l, st); }}\n"
        f'extern "C" EMU_EXPORT long emu_max_threads() {{ return {bound}; }}\n'
    )


# --------------------------------------------------------------------------
# Compiling and caching.
# --------------------------------------------------------------------------
def _cache_dir() -> Path:
    env = os.environ.get("CUDA_EMU_CACHE")
    if env:
        d = Path(env)
    else:
        d = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kernel-rosetta" / "cuda_emu"
    d.mkdir(parents=True, exist_ok=True)
    return d


@functools.lru_cache(maxsize=None)
def _compiler_id() -> str:
    try:
        out = subprocess.run([CXX, "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise CompileError(f"cannot run the C++ compiler {CXX!r} (set CUDA_EMU_CXX): {e}") from e
    return out.splitlines()[0] if out else CXX


@dataclass
class _Library:
    path: Path
    lib: ctypes.CDLL
    params: list[_ParamInfo]
    max_threads: int
    static_shared: int


_loaded: dict[Path, _Library] = {}


def _static_shared_bytes(so: Path, kernel: str, all_kernels: list[str], lib: ctypes.CDLL) -> int:
    """Bytes of __shared__ variables the kernel can use.

    All __shared__ variables of the source live in one section; `nm` tells us
    which belong to another kernel (function-local statics are mangled as
    _ZZ<len><function>...), so those are not counted against this one.
    Variables at file scope or in __device__ helpers are counted.
    """
    try:
        out = subprocess.run(["nm", "-S", "--defined-only", "-f", "sysv", str(so)],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # no binutils: count every kernel's
        lib.emu_static_shared_total.restype = ctypes.c_long
        return int(lib.emu_static_shared_total())
    others = [f"_ZZ{len(k)}{k}" for k in all_kernels if k != kernel]
    total = 0
    for line in out.splitlines():
        cols = [c.strip() for c in line.split("|")]
        if len(cols) < 7 or cols[6] != "emu_shared" or cols[3] != "OBJECT" or not cols[4]:
            continue
        if any(cols[0].startswith(o) for o in others):
            continue
        total += int(cols[4], 16)
    return total


def compile_kernel(source: str, kernel: str) -> _Library:
    """Compile (or fetch from the cache) the library for one kernel of `source`."""
    decls = _parse_kernels(source)
    if kernel not in decls:
        found = ", ".join(decls) or "none"
        raise ValueError(f"kernel {kernel!r} is not a __global__ function of this source (found: {found})")
    code = _generated_source(source, decls[kernel])
    key = hashlib.sha256("\0".join(
        [_SHIM.read_text(), code, kernel, " ".join(CXXFLAGS), _compiler_id()]).encode()).hexdigest()[:24]
    cache = _cache_dir()
    so = cache / f"{kernel}-{key}.so"
    if so in _loaded:
        return _loaded[so]
    if not so.exists():
        # Keep the generated C++ next to the library: it is what to read
        # when a compiler message or a crash needs explaining.
        cpp = cache / f"{kernel}-{key}.cpp"
        tmp_cpp = cache / f"{kernel}-{key}.{os.getpid()}.tmp.cpp"
        tmp_cpp.write_text(code)
        os.replace(tmp_cpp, cpp)  # (parallel runs write identical text; never half a file)
        tmp = cache / f"{kernel}-{key}.{os.getpid()}.tmp.so"
        cmd = [CXX, *CXXFLAGS, "-I", str(_HERE), "-x", "c++", str(cpp), "-o", str(tmp)]
        # LC_ALL=C: plain ASCII quotes in diagnostics, whatever the user's locale.
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})
        if r.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise CompileError(f"g++ could not compile kernel {kernel!r}:\n{r.stderr.strip()}\n"
                               f"(generated source: {cpp})")
        os.replace(tmp, so)  # atomic: parallel test runs never see half a file
    lib = ctypes.CDLL(str(so))
    lib.emu_describe.argtypes = [ctypes.POINTER(_ParamInfo), ctypes.c_int]
    lib.emu_describe.restype = ctypes.c_int
    lib.emu_launch.argtypes = [ctypes.POINTER(_Launch), ctypes.c_void_p]
    lib.emu_launch.restype = ctypes.c_int
    lib.emu_max_threads.restype = ctypes.c_long
    infos = (_ParamInfo * 64)()
    n = lib.emu_describe(infos, 64)
    if n > 64:
        raise CompileError(f"kernel {kernel!r} has {n} parameters; the emulator supports 64")
    entry = _Library(so, lib, list(infos[:n]), int(lib.emu_max_threads()),
                     _static_shared_bytes(so, kernel, list(decls), lib))
    _loaded[so] = entry
    return entry


# --------------------------------------------------------------------------
# Device memory: shared (so the forked child's writes come back), and
# fenced by PROT_NONE pages.
# --------------------------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_PROT_NONE, _PROT_RW = 0, mmap.PROT_READ | mmap.PROT_WRITE
_MAP_FAILED = ctypes.c_void_p(-1).value
_CANARY = 0xA5


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def _map_shared(size: int) -> int:
    addr = _libc.mmap(None, size, _PROT_RW, mmap.MAP_SHARED | mmap.MAP_ANONYMOUS, -1, 0)
    if addr in (None, _MAP_FAILED):
        raise MemoryError(f"mmap of {size} bytes failed: {os.strerror(ctypes.get_errno())}")
    return addr


class _DeviceBuffer:
    """[guard page][head padding][data][tail padding < 16 B][guard page].

    The data starts 16-byte aligned (cudaMalloc promises 256; float4 code
    needs 16) and ends at most 15 bytes before the tail guard page.  So an
    access past the end faults unless it lands in that tail padding; to
    catch *writes* there (and writes just before the start), the padding is
    filled with a canary byte that is checked after the launch.  Reads of
    the padding go unnoticed.
    """

    def __init__(self, nbytes: int, label: str = "", describe: str = "", itemsize: int = 1):
        self.nbytes = nbytes
        self.label, self.describe, self.itemsize = label, describe, itemsize  # for messages
        padded = _round_up(nbytes, 16)
        self.body = max(_round_up(padded, PAGE), PAGE)
        self.total = self.body + 2 * PAGE
        self.base = _map_shared(self.total)
        _libc.mprotect(self.base, PAGE, _PROT_NONE)
        _libc.mprotect(self.base + PAGE + self.body, PAGE, _PROT_NONE)
        self.end = self.base + PAGE + self.body  # first byte of the tail guard page
        self.addr = self.end - padded
        self._mem = np.ctypeslib.as_array((ctypes.c_ubyte * self.body).from_address(self.base + PAGE))
        self._mem[:] = _CANARY
        self._offset = self.addr - (self.base + PAGE)

    def view(self, dtype, shape) -> np.ndarray:
        raw = self._mem[self._offset:self._offset + self.nbytes]
        return raw.view(dtype).reshape(shape)

    def canary_damage(self) -> tuple[int, int]:
        """How far writes reached (bytes before the start, bytes past the end)."""
        head = np.flatnonzero(self._mem[:self._offset] != _CANARY)
        tail = np.flatnonzero(self._mem[self._offset + self.nbytes:] != _CANARY)
        return (self._offset - int(head[0]) if head.size else 0), (int(tail[-1]) + 1 if tail.size else 0)

    def close(self):
        self._mem = None
        _libc.munmap(self.base, self.total)


# --------------------------------------------------------------------------
# Checking a launch.
# --------------------------------------------------------------------------
def _dims(value, what: str) -> tuple[int, int, int]:
    dims = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if not 1 <= len(dims) <= 3 or not all(isinstance(d, (int, np.integer)) for d in dims):
        raise TypeError(f"{what} must be an int or a tuple of 1 to 3 ints, got {value!r}")
    return tuple(int(d) for d in dims) + (1,) * (3 - len(dims))


def _check_config(kernel: str, grid, block, shared_bytes: int) -> None:
    def bad(why: str):
        raise LaunchConfigError(f"invalid launch of kernel {kernel!r}: {why} (cudaErrorInvalidConfiguration)")

    threads = block[0] * block[1] * block[2]
    if threads > MAX_THREADS_PER_BLOCK:
        bad(f"block {block} has {threads} threads; CUDA allows at most {MAX_THREADS_PER_BLOCK} per block")
    for what, dims, limits in (("grid", grid, MAX_GRID_DIM), ("block", block, MAX_BLOCK_DIM)):
        if min(dims) < 1:
            bad(f"{what} {dims} has an empty dimension")
        for axis, d, lim in zip("xyz", dims, limits):
            if d > lim:
                bad(f"{what}.{axis} = {d} exceeds CUDA's limit of {lim}")
    if shared_bytes < 0:
        bad(f"shared_bytes = {shared_bytes} is negative")


def _check_resources(kernel: str, lib: _Library, block, shared_bytes: int, allow_large_shared: bool):
    threads = block[0] * block[1] * block[2]
    if threads > lib.max_threads:
        raise LaunchConfigError(
            f"invalid launch of kernel {kernel!r}: {threads} threads per block, but the kernel is compiled "
            f"with __launch_bounds__({lib.max_threads}) (cudaErrorLaunchOutOfResources)")
    static, total = lib.static_shared, lib.static_shared + shared_bytes
    if static > SHARED_LIMIT:
        raise LaunchConfigError(
            f"kernel {kernel!r} declares {static} bytes of static __shared__ memory; CUDA allows at most "
            f"{SHARED_LIMIT} (larger buffers must be dynamic)")
    limit = SHARED_LIMIT_OPT_IN if allow_large_shared else SHARED_LIMIT
    if total > limit:
        hint = ("" if allow_large_shared else
                "; above 48 KiB a kernel must opt in with cudaFuncSetAttribute("
                "cudaFuncAttributeMaxDynamicSharedMemorySize) - pass allow_large_shared=True to model that")
        raise LaunchConfigError(
            f"invalid launch of kernel {kernel!r}: {static} bytes of static + {shared_bytes} bytes of dynamic "
            f"shared memory = {total} > {limit}{hint}")


def _describe_param(i: int, decl: _KernelDecl, nparams: int) -> str:
    if len(decl.params) == nparams:  # our parse agrees with the compiler
        return f"argument {i} ({decl.params[i].text!r})"
    return f"argument {i}"


def _signature(decl: _KernelDecl) -> str:
    return f"{decl.name}({', '.join(p.text for p in decl.params)})"


def _marshal_args(kernel: str, decl: _KernelDecl, lib: _Library, args: list):
    infos = lib.params
    if len(args) != len(infos):
        raise TypeError(f"kernel {_signature(decl)} takes {len(infos)} arguments but {len(args)} were given")
    buffers: list[tuple[np.ndarray, _DeviceBuffer, bool]] = []  # (user array, buffer, copy back)
    argv = (ctypes.c_void_p * max(1, len(args)))()
    keep_alive = []
    try:
        for i, (a, info) in enumerate(zip(args, infos)):
            where = _describe_param(i, decl, len(infos))
            expected = _DTYPE_OF.get((info.kind, info.size))
            if info.is_pointer:
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"kernel {kernel!r} {where} is a pointer and needs a numpy array, "
                                    f"got {type(a).__name__}")
                if info.kind not in (_KIND_OTHER, _KIND_VOID):
                    if expected is None or a.dtype != expected:
                        want = np.dtype(expected).name if expected else f"{info.size}-byte elements"
                        raise TypeError(f"kernel {kernel!r} {where} needs a {want} array, got {a.dtype}")
                if not a.flags.c_contiguous:
                    raise ValueError(f"kernel {kernel!r} {where}: the array must be C-contiguous "
                                     f"(use np.ascontiguousarray)")
                if not a.flags.writeable and not info.is_const:
                    raise ValueError(f"kernel {kernel!r} {where}: the kernel may write this buffer, "
                                     f"but the array is read-only")
                buf = None
                for other, obuf, _ in buffers:  # the same buffer passed twice aliases, as on a GPU
                    same = (other.__array_interface__["data"][0] == a.__array_interface__["data"][0]
                            and other.nbytes == a.nbytes)
                    if same:
                        buf = obuf
                    elif np.may_share_memory(other, a):  # exact for C-contiguous arrays
                        raise ValueError(f"kernel {kernel!r} {where} partly overlaps an earlier array "
                                         f"argument; only identical buffers can be passed twice")
                if buf is None:
                    name = decl.params[i].name if len(decl.params) == len(infos) else None
                    buf = _DeviceBuffer(a.nbytes, f"argument {i}" + (f" {name!r}" if name else ""),
                                        f"{a.dtype}[{a.size}]", a.dtype.itemsize)
                    buf.view(a.dtype, a.shape)[...] = a
                buffers.append((a, buf, a.flags.writeable))
                store = ctypes.c_uint64(buf.addr)
            else:
                if isinstance(a, np.ndarray):
                    raise TypeError(f"kernel {kernel!r} {where} is passed by value and needs a numpy scalar, "
                                    f"got an array")
                if info.kind in (_KIND_OTHER, _KIND_VOID) or info.lanes != 1 or expected is None:
                    raise TypeError(f"kernel {kernel!r} {where}: by-value parameters of this type are not "
                                    f"supported by the emulator")
                want = np.dtype(expected).name
                if not isinstance(a, np.generic):
                    raise TypeError(f"kernel {kernel!r} {where} needs np.{want}, got {type(a).__name__} "
                                    f"{a!r}; pass np.{want}({a!r}) so the width is explicit, as a GPU launch needs")
                if a.dtype != expected:
                    raise TypeError(f"kernel {kernel!r} {where} needs np.{want}, got np.{a.dtype.name}")
                store = (ctypes.c_uint64 * 1)()
                ctypes.memmove(store, a.tobytes(), a.dtype.itemsize)
            keep_alive.append(store)
            argv[i] = ctypes.addressof(store)
    except BaseException:
        for _, buf, _ in buffers:
            buf.close()
        raise
    return argv, keep_alive, buffers


# --------------------------------------------------------------------------
# Running it.
# --------------------------------------------------------------------------
def _fault_message(status: _Status, buffers, shared_bytes: int, stack_kib: int) -> str:
    sig = signal.Signals(status.signo).name if status.signo else "signal"
    addr = status.fault_addr
    if status.fault_kind == _FAULT_STACK:
        return (f"stack overflow ({sig}): a CUDA thread used more than its {stack_kib} KiB fiber stack "
                f"(large local arrays?); raise stack_kib= or CUDA_EMU_STACK_KIB")
    if status.fault_kind == _FAULT_SHARED:
        return (f"out-of-bounds dynamic shared memory access ({sig}) at byte offset {status.fault_offset}: "
                f"the launch has {shared_bytes} bytes of dynamic shared memory")
    seen = set()
    for _, buf, _ in buffers:
        if id(buf) in seen:
            continue
        seen.add(id(buf))
        off = addr - buf.addr
        if buf.end <= addr < buf.end + PAGE or buf.base <= addr < buf.base + PAGE:
            side = "past its end" if off >= 0 else f"{-off} bytes before its start"
            return (f"out-of-bounds access ({sig}) at byte offset {off} (element [{off // buf.itemsize}]) of "
                    f"{buf.label}, a {buf.describe} array of {buf.nbytes} bytes: {side}")
    if addr < PAGE:
        return f"invalid memory access ({sig}) at address 0x{addr:x}: a null pointer"
    if status.signo == signal.SIGFPE:
        return f"arithmetic exception ({sig}): integer division by zero?"
    return f"invalid memory access ({sig}) at address 0x{addr:x}, outside every argument buffer"


def _wait(pid: int, timeout: float, kernel: str) -> int:
    deadline = time.monotonic() + timeout
    delay = 0.0002
    try:
        while True:
            done, wstatus = os.waitpid(pid, os.WNOHANG)
            if done:
                return wstatus
            if time.monotonic() > deadline:
                raise EmulatorError(
                    f"kernel {kernel!r} did not finish within {timeout:g} s and was killed: an endless loop? "
                    f"(threads run one at a time here, so a thread that spins waiting for another thread "
                    f"of its block to write a flag never stops)")
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise


def run_kernel(source: str, kernel: str, grid, block, shared_bytes: int, args: list, *,
               timeout: float | None = None, stack_kib: int | None = None,
               allow_large_shared: bool = False, isolate: bool = True) -> None:
    """Launch `kernel` from the CUDA C `source` as kernel<<<grid, block, shared_bytes>>>(*args).

    grid, block: an int or a tuple of up to three ints.
    args: numpy arrays for pointer parameters (written back in place, like
        device buffers copied back after the launch) and numpy scalars
        (np.int32, np.float32, ...) of exactly the declared type for the
        others.
    timeout: seconds before the launch counts as hung (CUDA_EMU_TIMEOUT, 60).
    stack_kib: stack per CUDA thread (CUDA_EMU_STACK_KIB, 64).
    allow_large_shared: the kernel opted in to more than 48 KiB of shared
        memory (up to 227 KiB), as with cudaFuncSetAttribute.
    isolate: run in a forked child (default).  False runs in this process -
        only for debugging under gdb: a faulty kernel then kills the caller.

    Raises TypeError / ValueError for wrong arguments, LaunchConfigError for
    launches CUDA would refuse, CompileError, and EmulatorError when the
    kernel crashes, accesses memory out of bounds, deadlocks or hangs.  On an
    error the caller's arrays are left untouched.
    """
    grid3, block3 = _dims(grid, "grid"), _dims(block, "block")
    shared_bytes = int(shared_bytes)
    _check_config(kernel, grid3, block3, shared_bytes)
    lib = compile_kernel(source, kernel)
    decl = _parse_kernels(source)[kernel]
    _check_resources(kernel, lib, block3, shared_bytes, allow_large_shared)
    timeout = float(os.environ.get("CUDA_EMU_TIMEOUT", DEFAULT_TIMEOUT_S)) if timeout is None else timeout
    stack_kib = int(os.environ.get("CUDA_EMU_STACK_KIB", DEFAULT_STACK_KIB)) if stack_kib is None else stack_kib

    argv, keep_alive, buffers = _marshal_args(kernel, decl, lib, list(args))
    status_mem = _map_shared(_round_up(ctypes.sizeof(_Status), PAGE))
    try:
        status = _Status.from_address(status_mem)
        launch = _Launch(argv, (ctypes.c_uint32 * 3)(*grid3), (ctypes.c_uint32 * 3)(*block3),
                         shared_bytes, stack_kib * 1024, 1 if isolate else 0)
        t0 = time.perf_counter()
        if isolate:
            pid = os.fork()
            if pid == 0:  # child: launch, then leave without running any Python cleanup
                rc = 70
                try:
                    rc = lib.lib.emu_launch(ctypes.byref(launch), status_mem)
                except BaseException as e:  # noqa: BLE001 - must always reach os._exit
                    status.code, status.msg = _EMU_ERROR, repr(e).encode()[:4000]
                finally:
                    os._exit(rc)
            wstatus = _wait(pid, timeout, kernel)
        else:
            lib.lib.emu_launch(ctypes.byref(launch), status_mem)
            wstatus = 0
        last_launch_stats.clear()
        last_launch_stats.update(seconds=time.perf_counter() - t0, resumes=status.resumes,
                                 blocks=status.blocks, threads=status.blocks * block3[0] * block3[1] * block3[2])

        where = ""
        if status.code != _EMU_OK and status.in_thread:
            where = f" [block ({','.join(map(str, status.block))}), thread ({','.join(map(str, status.thread))})]"
        if status.code == _EMU_ERROR:
            raise EmulatorError(f"kernel {kernel!r}: {status.msg.decode(errors='replace')}{where}")
        if status.code == _EMU_CRASH:
            raise EmulatorError(f"kernel {kernel!r} crashed: "
                                f"{_fault_message(status, buffers, shared_bytes, stack_kib)}{where}")
        if os.WIFSIGNALED(wstatus):
            raise EmulatorError(f"kernel {kernel!r} crashed: killed by {signal.Signals(os.WTERMSIG(wstatus)).name}")
        if os.WIFEXITED(wstatus) and os.WEXITSTATUS(wstatus) != 0:
            raise EmulatorError(f"kernel {kernel!r}: launcher exited with status {os.WEXITSTATUS(wstatus)}")

        seen = set()
        for _, buf, _ in buffers:
            if id(buf) in seen:
                continue
            seen.add(id(buf))
            head, tail = buf.canary_damage()
            if head or tail:
                side = f"up to {tail} bytes past its end" if tail else f"up to {head} bytes before its start"
                raise EmulatorError(
                    f"kernel {kernel!r}: out-of-bounds write to {buf.label} ({buf.describe}): it wrote {side} "
                    f"(into the alignment padding, which does not fault but is checked after the launch)")
        for a, buf, writeback in buffers:
            if writeback:
                np.copyto(a, buf.view(a.dtype, a.shape))
    finally:
        seen = set()
        for _, buf, _ in buffers:
            if id(buf) not in seen:
                seen.add(id(buf))
                buf.close()
        _libc.munmap(status_mem, _round_up(ctypes.sizeof(_Status), PAGE))
        del keep_alive  # the scalar storage argv points into lived until here
