"""`mojo`: the Mojo kernels in mojo_impl/, built into Python extension modules (see
build.py) and called with the raw addresses of numpy arrays: no copies.

Every kernel, whatever its primitive, is called the same way: `module.<primitive>_<variant>(
block)`, one int, the address of an argument block (args.py) that holds every tensor's
address, the dims and the typed scalars in the declaration's order. Nothing here is keyed
by a primitive's name: the declaration says what the slots are, and the .mojo file says
which variants it has (its add_variant lines, read without building).

The op layer (MojoOps, harness/backends/ops.py): a Buffer's storage is a 64-byte-aligned,
C-contiguous numpy array that the kernels read and write in place. `call` checks a call
once, before any address is taken: the buffers against the declaration (Ops._checked:
names, backend, dtype, shape) and each array once more in args.pack (aligned,
C-contiguous, exact dtype and shape, writable where written). It returns a MojoCall that
holds the packed block and the arrays it points into, so a run is only the call into
Mojo with one cached int; set_scalars rewrites single scalar slots of that block.

Bind/run (MojoKernel, MojoBound) is OpsBound over MojoOps: bind() runs the declaration's
input validation (dtype, dimensions, matching shapes, non-empty, C-contiguous, finite,
labels in range) before anything is uploaded, and a timed call is MojoCall.run.

A raw address carries no dtype, shape or length: a float64 array read as float32 is
silent garbage and a short array is a read past the end of a buffer (or a crashed
interpreter). That is why nothing reaches Mojo but arrays this module allocated itself,
checked twice.

A compile error in one module makes prepare() (and ops().call()) raise a one-line error
(file:line: error) for the primitives of that file only; the runner records it and every
other backend and primitive still runs.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

from ...core import catalogue
from ...core.declaration import DTYPES, Primitive
from ...errors import InputError
from ..base import Availability, Backend, BackendError, Bound, OpsBound, OpsKernel
from ..ops import Buffer, Call, Ops, _dtype_name, poison_value
from . import args as block_args
from . import build

# What new_module (python_entry.mojo) registers in every module besides the kernels.
SHARED_EXPORTS = ("simd_width", "noop")
ALIGNMENT = 64                  # bytes: a cache line, and a whole AVX-512 vector


def aligned_empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary (numpy
    itself only promises 16): every vector load of a row start is then aligned, and no
    two buffers share a cache line."""
    dt = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    nbytes = max(int(np.prod(shape, dtype=np.int64)), 1) * dt.itemsize
    raw = np.empty(nbytes + ALIGNMENT, dtype=np.uint8)
    start = (-raw.ctypes.data) % ALIGNMENT
    return raw[start:start + nbytes].view(dt).reshape(shape)


# A function that gives the Mojo entry of (primitive, variant) and its kernel name.
Resolver = Callable[[Primitive, str], "tuple[Callable[[int], None], str]"]


class MojoCall(Call):
    """One (primitive, variant) bound to buffers: the packed block, and the arrays its
    addresses point into, kept alive here for as long as the call exists."""

    def __init__(self, prim: Primitive, fn, name: str, arrays: dict[str, np.ndarray], dims, scalars: dict):
        self.prim, self.name = prim, name
        self._fn = fn
        self._arrays = arrays                           # alive while the block points at them
        block = block_args.pack(prim, arrays, dims, scalars)
        block.flags.writeable = True                    # ours alone: set_scalars rewrites slots
        self._block = block
        self._address = block.ctypes.data
        self._slots = block_args.scalar_slots(prim)
        self._scalars = {s.name: s for s in prim.scalars}
        # The same words as Python buffers, for set_scalars' fast path: writing a Python
        # number into a memoryview item is ~20x cheaper than the numpy scalar machinery
        # (it runs every training step, once per optimizer call).
        self._words = memoryview(block).cast("B").cast("q")
        self._halves = memoryview(block).cast("B").cast("f")
        self._fast = {s.name: (self._slots[s.name], s.dtype) for s in prim.scalars}

    def run(self) -> None:
        try:
            self._fn(self._address)
        except Exception as e:           # a slot mismatch found by python_entry's accessors
            raise BackendError(f"{self.name}: {e}") from None

    def set_scalars(self, **values) -> None:
        """Rewrite only the named scalar slots (each value checked as at call time)."""
        for key, value in values.items():
            fast = self._fast.get(key)
            if fast is not None:                        # plain Python numbers that need no conversion
                word, dtype = fast
                kind = type(value)
                if kind is int and dtype != "float32" and (
                        -_I32 <= value < _I32 if dtype == "int32" else -_I64 <= value < _I64):
                    self._words[word] = value
                    continue
                if kind is float and dtype == "float32" and math.isfinite(value) and abs(value) <= _F32_MAX:
                    self._halves[2 * word] = value      # low half: rounded to float32; the high half stays 0
                    continue
            s = self._scalars.get(key)
            if s is None:
                valid = ", ".join(self._scalars) or "none"
                raise InputError(f"{self.prim.name}: unknown scalar {key} (scalars: {valid})")
            block_args.write_scalar(self.prim, self._block, self._slots[key], s, s.cast(value))

    def close(self) -> None:
        """Drop the arrays; the block's addresses would dangle, so a later run is refused."""
        self._arrays = {}
        self._fn = _closed

    def scalars(self) -> dict:
        """The scalar values the next run will see, read back from the block."""
        decoded = block_args.decode(self._block)
        first = len(self.prim.tensors) + len(self.prim.dims)
        return {s.name: decoded[first + i][1] for i, s in enumerate(self.prim.scalars)}


def _closed(address: int) -> None:
    raise BackendError("this call has been closed (its buffers may be gone)")


_I32, _I64 = 1 << 31, 1 << 63
_F32_MAX = float(np.finfo(np.float32).max)


class MojoOps(Ops):
    """Tensors as aligned numpy arrays that Mojo kernels write in place (zero-copy)."""

    def __init__(self, resolve: Resolver, name: str = "mojo"):
        self.name, self._resolve = name, resolve

    # ------------------------------------------------------------------ memory
    def upload(self, array) -> Buffer:
        a = np.asarray(array)
        dtype = _dtype_name(a.dtype)                    # float32 or int64, native byte order
        storage = aligned_empty(a.shape, DTYPES[dtype])
        np.copyto(storage, a)
        return Buffer(self, a.shape, dtype, storage)

    def empty(self, shape, dtype: str = "float32") -> Buffer:
        if dtype not in DTYPES:
            raise InputError(f"no tensor of dtype {dtype} can be allocated: float32 or int64 only")
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        return Buffer(self, shape, dtype, aligned_empty(shape, DTYPES[dtype]))

    def download(self, buf: Buffer) -> np.ndarray:
        """The buffer's own array (zero-copy: it changes when a kernel writes the buffer)."""
        return self._storage(buf)

    def write(self, buf: Buffer, array) -> None:
        a = np.asarray(array)
        if a.dtype != np.dtype(DTYPES[buf.dtype]) or a.shape != buf.shape:
            raise InputError(f"cannot write a {a.dtype} array of shape {a.shape} into a {buf.dtype} "
                             f"buffer of shape {buf.shape}")
        np.copyto(self._storage(buf), a)

    def copy(self, dst: Buffer, src: Buffer) -> None:
        if dst.shape != src.shape or dst.dtype != src.dtype:
            raise InputError(f"cannot copy a {src.dtype} buffer of shape {src.shape} into a {dst.dtype} "
                             f"buffer of shape {dst.shape}")
        np.copyto(self._storage(dst), self._storage(src))

    def poison(self, buf: Buffer) -> None:
        self._storage(buf).fill(poison_value(buf.dtype))

    def reshape_storage(self, storage, shape):
        """What a view (Ops.view) of the buffer sees: the same array reshaped, sharing its
        memory (a C-contiguous array reshapes without a copy), so a (64, 256) activation
        is relu's 16384-element x and a kernel writing either writes both."""
        if storage is None or storage.shape == shape:
            return storage
        return storage.reshape(shape)

    def _storage(self, buf: Buffer) -> np.ndarray:
        if not isinstance(buf, Buffer) or buf.ops is not self:
            raise InputError(f"{buf!r} is not a buffer of {self.name}")
        if buf.storage is None:
            raise InputError(f"{buf!r} has been freed")
        return buf.storage

    # ------------------------------------------------------------------ calls
    def call(self, primitive: str, variant: str, buffers: dict[str, Buffer], scalars: dict | None = None) -> MojoCall:
        prim, dims = self._checked(primitive, buffers)
        freed = [n for n, b in buffers.items() if b.storage is None]
        if freed:
            raise InputError(f"{prim.name}: buffer {freed[0]!r} has been freed")
        typed = prim.scalar_values(scalars)             # typed; unknown names refused
        fn, name = self._resolve(prim, variant)         # BackendError: no such variant, compile error
        arrays = {t.name: buffers[t.name].storage for t in prim.tensors}
        return MojoCall(prim, fn, name, arrays, dims, typed)   # args.pack checks every array


class MojoBound(OpsBound):
    """OpsBound whose call() is the MojoCall's run itself: one attribute lookup fewer
    per timed call."""

    def __init__(self, ops, prim, variant, inputs, scalars):
        super().__init__(ops, prim, variant, inputs, scalars)
        self.call = self._call.run


class MojoKernel(OpsKernel):
    """A prepared (primitive, variant): its module built (or loaded from the cache)."""

    bound_class = MojoBound

    def __init__(self, ops: MojoOps, primitive: str, variant: str, compile_s: float | None = None,
                 cached: bool = False, name: str = ""):
        super().__init__(ops, primitive, variant)
        self.compile_s, self.compile_cached = compile_s, cached
        self.name = name or f"{self.prim.name}_{variant}"


class _FloorBound(Bound):
    """The module's no-op through the kernels' path, for the empty-call floor."""

    def __init__(self, run):
        self.call = run

    def call(self) -> None:           # replaced per instance in __init__
        pass

    def outputs(self) -> dict[str, np.ndarray]:
        return {}


class MojoBackend(Backend):
    name = "mojo"
    device = "cpu"
    description = "Mojo (CPU): mojo_impl/ built as extension modules, SIMD + threads, zero-copy"

    def __init__(self, sources: Path = build.SOURCES, cache: Path | None = None):
        self._sources = Path(sources)
        self._cache = cache                      # None: build.cache_dir()
        self._toolchain: build.Toolchain | None = None
        self._unavailable: build.MojoUnavailable | None = None
        self._modules: dict[str, build.Built] = {}            # by build key
        self._errors: dict[str, build.MojoCompileError] = {}  # by build key: fail once
        self._ops = MojoOps(self._function)

    # ------------------------------------------------------------------ availability
    def toolchain(self) -> build.Toolchain:
        if self._toolchain is None and self._unavailable is None:
            try:
                self._toolchain = build.find_toolchain()
            except build.MojoUnavailable as e:
                self._unavailable = e
        if self._unavailable is not None:
            raise self._unavailable
        return self._toolchain

    def availability(self) -> Availability:
        try:
            tc = self.toolchain()
        except build.MojoUnavailable as e:
            return Availability(False, reason=e.reason, hint=e.hint)
        return Availability(True, detail=f"{tc.version}, target {tc.target_cpu}, "
                                         f"{tc.simd_width_f32} float32 SIMD lanes")

    # ------------------------------------------------------------------ variants, from the sources
    def source(self, stem: str) -> Path:
        return self._sources / f"{stem}.mojo"

    def kernels(self, stem: str) -> dict[str, list[tuple[str, str]]]:
        """{primitive: [(variant, kernel name), ...]} registered by <stem>.mojo, in source
        order; {} when there is no such file. Read from the text: no compiler needed."""
        source = self.source(stem)
        if not source.is_file():
            return {}
        found: dict[str, list[tuple[str, str]]] = {}
        for fn in build.registered(source):
            hit = catalogue.resolve(stem, fn)
            if hit is None:
                valid = ", ".join(p.name for p in catalogue.with_stem(stem)) or "none"
                raise BackendError(f"{source.name} registers {fn!r}, which is not named <primitive>_<variant> "
                                   f"for a primitive of {stem} ({valid})")
            prim, variant = hit
            found.setdefault(prim.name, []).append((variant, fn))
        return found

    def variants(self, primitive: str) -> list[str]:
        prim = catalogue.get(primitive)
        return [v for v, _ in self.kernels(prim.file_stem).get(prim.name, [])]

    # ------------------------------------------------------------------ build and prepare
    def module(self, stem: str) -> build.Built:
        """The built module of one file stem: from this process, the disk cache, or the compiler."""
        try:
            tc = self.toolchain()
        except build.MojoUnavailable as e:
            raise BackendError(f"Mojo is not available: {e.reason}") from None
        source = self.source(stem)
        if not source.is_file():
            raise BackendError(f"no Mojo source for {stem}: {source.name} is missing")
        key = build.build_key(source, tc)        # changes when the source or a local import is edited
        if key in self._errors:
            raise self._errors[key]
        if key not in self._modules:
            try:
                self._modules[key] = build.build_module(source, tc, self._cache)
            except build.MojoCompileError as e:
                self._errors[key] = e
                raise
        return self._modules[key]

    def _function(self, prim: Primitive, variant: str) -> tuple[Callable[[int], None], str]:
        """The Mojo entry of (primitive, variant) and its kernel name, its module built or
        loaded once per process; BackendError for an unknown variant or a compile error."""
        kernels = dict(self.kernels(prim.file_stem).get(prim.name, []))
        if variant not in kernels:
            raise BackendError(f"mojo has no variant {variant!r} of {prim.name}; "
                               f"valid: {', '.join(kernels) or 'none'}")
        built = self.module(prim.file_stem)
        name = kernels[variant]
        fn = getattr(built.module, name, None)
        if not callable(fn):
            raise BackendError(f"the built {prim.file_stem} module has no function {name!r}, "
                               f"although {prim.file_stem}.mojo registers it")
        return fn, name

    def ops(self) -> MojoOps | None:
        """The op layer, or None where Mojo cannot build here (availability says why)."""
        return self._ops if self.availability().ok else None

    def prepare(self, primitive: str, variant: str) -> MojoKernel:
        prim = catalogue.get(primitive)
        _, name = self._function(prim, variant)                # builds or loads the module
        built = self.module(prim.file_stem)
        # compile_s is the module's: one compile serves all its variants.
        return MojoKernel(self._ops, prim.name, variant, built.seconds, built.cached, name=name)

    # ------------------------------------------------------------------ the empty-call floor
    def _any_module(self) -> build.Built:
        if self._modules:
            return next(iter(self._modules.values()))
        for stem in catalogue.stems():
            if self.source(stem).is_file():
                return self.module(stem)
        raise BackendError(f"no Mojo source in {self._sources}")

    def floor_bound(self) -> Bound:
        """The module's no-op bound to an empty block: the path a kernel call takes
        (bound.call -> MojoCall.run -> entry -> Args -> GIL released -> unpack), with no work."""
        noop = self._any_module().module.noop
        block = np.array([block_args.MAGIC, 0], dtype=np.int64)
        address = block.ctypes.data

        def run() -> None:                                    # MojoCall.run's shape, on the no-op
            try:
                noop(address)
            except Exception as e:
                raise BackendError(f"noop: {e}") from None
        run.block = block                                     # alive as long as the bound case
        return _FloorBound(run)

    def measure_floor(self, timing, clock) -> dict | None:
        from ...core.timing import measure
        bound = self.floor_bound()
        stats = measure(lambda calls: bound.time_once(clock, calls), timing, clock, batch=True)
        return {**stats.as_dict(), "how": "the module's no-op entry through the kernels' path: "
                                          "one block address, slot reader, GIL released and retaken"}

    # ------------------------------------------------------------------ reporting
    def environment(self) -> dict:
        try:
            tc = self.toolchain()
        except build.MojoUnavailable:
            return {}
        width = tc.simd_width_f32
        loaded = next(iter(self._modules.values()), None)
        if loaded is not None:                                 # what the compiled code says
            width = int(loaded.module.simd_width())
        return {"mojo": tc.version, "mojo_target_cpu": tc.target_cpu, "mojo_simd_width_f32": width}

    def build_report(self, arch: str | None = None, primitives: list[str] | None = None) -> list[dict]:
        """Build every Mojo module (cached builds are reused and say so); one row per
        variant the source registers, checked against what the built module exports, or
        one row per primitive with the compiler's errors. `arch` is a CUDA notion and is
        ignored: the Mojo target is the host CPU, or $KR_MOJO_TARGET_CPU."""
        tc = self.toolchain()                                   # MojoUnavailable: build.py reports it
        rows = []
        for primitive in primitives or list(catalogue.PRIMITIVES):
            prim = catalogue.get(primitive)
            stem = prim.file_stem
            try:
                kernels = self.kernels(stem)
            except BackendError as e:
                rows.append(dict(primitive=primitive, variant="*", ok=False, arch=tc.target_cpu, detail=str(e)))
                continue
            mine = kernels.get(prim.name, [])
            if not mine:
                rows.append(dict(primitive=primitive, variant="", ok=True, detail="no Mojo implementation"))
                continue
            try:
                built = self.module(stem)
            except BackendError as e:
                rows.append(dict(primitive=primitive, variant="*", ok=False, arch=tc.target_cpu, detail=str(e)))
                continue
            how = (f"cached build, loaded in {built.seconds:.2f} s" if built.cached
                   else f"compiled in {built.seconds:.1f} s")
            if built.warnings:
                how += f", {len(built.warnings)} warnings: {built.warnings[0]}"
            for variant, name in mine:
                ok = callable(getattr(built.module, name, None))
                rows.append(dict(primitive=primitive, variant=variant, function=name, ok=ok, arch=tc.target_cpu,
                                 compile_s=built.seconds, cached=built.cached,
                                 detail=how if ok else f"the built module does not export {name!r}"))
            # Anything the module exports that the source reading did not see would be a
            # kernel the harness never runs: report it against the file's first primitive.
            if prim is catalogue.with_stem(stem)[0]:
                listed = {name for entries in kernels.values() for _, name in entries}
                unseen = sorted(exported(built.module) - listed)
                if unseen:
                    rows.append(dict(primitive=primitive, variant="?", ok=False, arch=tc.target_cpu,
                                     detail=f"{stem}.mojo exports {', '.join(unseen)}, which no add_variant "
                                            f"line registers (the harness lists variants from those lines)"))
        return rows


def exported(module) -> set[str]:
    """The kernel functions a built module exports (without simd_width and noop)."""
    return {n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))} - set(SHARED_EXPORTS)
