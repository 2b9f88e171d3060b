"""`mojo`: the Mojo kernels in mojo_impl/, built into Python extension modules (see
build.py) and called with the raw addresses of the numpy arrays: no copies.

Every kernel, whatever its primitive, is called the same way: `module.<primitive>_<variant>(
block)`, one int, the address of an argument block (args.py) that holds every tensor's
address, the dims and the typed scalars in the declaration's order. Nothing here is keyed
by a primitive's name: the declaration says what the slots are, and the .mojo file says
which variants it has (its add_variant lines, read without building).

A raw address carries no dtype, shape or length. A float64 array read as float32 is
silent garbage and a short array is a read past the end of a buffer (or a crashed
interpreter), so every array is checked here, in Python, before its address is taken:
bind() runs the declaration's input validation (dtype, dimensions, matching shapes,
non-empty, C-contiguous, finite), allocates the outputs itself, and args.pack checks
each array once more (aligned, C-contiguous, exact dtype and shape) before it writes any
address into the block. The block is packed once, at bind time: a timed call is only
the call into Mojo with one cached int.

A compile error in one module makes prepare() raise a one-line error (file:line: error)
for the primitives of that file only; the runner records it and every other backend and
primitive still runs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core import catalogue
from ...core.declaration import Primitive
from ...errors import InputError
from ..base import Availability, Backend, BackendError, Bound, Kernel, poison_array
from . import args as block_args
from . import build

# What new_module (python_entry.mojo) registers in every module besides the kernels.
SHARED_EXPORTS = ("simd_width", "noop")


class MojoBound(Bound):
    """One kernel bound to its own tensors and the block that points at them."""

    def __init__(self, fn, name: str, block: np.ndarray, arrays: dict[str, np.ndarray],
                 roles: dict[str, str], pristine: dict[str, np.ndarray]):
        self._fn, self._name = fn, name
        self._block = block
        self._address = block.ctypes.data
        self._arrays = arrays            # every tensor whose address is in the block: alive while bound
        self._pristine = pristine        # inout tensors: the values every call starts from
        self._out = [arrays[n] for n, role in roles.items() if role == "out"]
        self._outputs = {n: arrays[n] for n, role in roles.items() if role in ("out", "inout")}

    def call(self) -> None:
        try:
            self._fn(self._address)
        except Exception as e:           # a slot mismatch found by python_entry's accessors
            raise BackendError(f"{self._name}: {e}") from None

    def outputs(self) -> dict[str, np.ndarray]:
        return dict(self._outputs)

    def poison(self) -> None:
        for a in self._out:
            poison_array(a)

    def restore(self) -> None:
        for name, value in self._pristine.items():
            np.copyto(self._arrays[name], value)

    def close(self) -> None:
        self._fn = None
        self._arrays, self._pristine, self._outputs, self._out = {}, {}, {}, []
        self._block = self._address = None


class MojoKernel(Kernel):
    def __init__(self, prim: Primitive, fn, compile_s: float, cached: bool, name: str = ""):
        self.prim, self.fn, self.name = prim, fn, name or prim.name
        self.compile_s, self.compile_cached = compile_s, cached

    def bind(self, inputs: dict[str, np.ndarray], scalars: dict | None = None) -> MojoBound:
        prim = self.prim
        dims = prim.validate(inputs)                               # InputError on anything wrong
        try:
            scal = prim.scalar_values(scalars)                     # typed; unknown names refused
        except (OverflowError, TypeError, ValueError) as e:        # e.g. 2**40 for an int32 scalar
            if isinstance(e, InputError):
                raise
            raise InputError(f"{prim.name}: a scalar cannot be passed to Mojo: {e}") from None
        arrays: dict[str, np.ndarray] = {}
        pristine: dict[str, np.ndarray] = {}
        for t in prim.tensors:
            if t.role == "in":
                arrays[t.name] = inputs[t.name]                    # read only: a read-only array is fine
            elif t.role == "inout":
                pristine[t.name] = np.array(inputs[t.name], dtype=t.np_dtype, order="C", copy=True)
                arrays[t.name] = pristine[t.name].copy()           # the kernel updates this one
            else:
                arrays[t.name] = np.empty(prim.shape_of(t, dims), dtype=t.np_dtype)
        block = block_args.pack(prim, arrays, dims, scal)          # checks every array, then the addresses
        return MojoBound(self.fn, self.name, block, arrays, {t.name: t.role for t in prim.tensors}, pristine)


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

    def prepare(self, primitive: str, variant: str) -> MojoKernel:
        prim = catalogue.get(primitive)
        kernels = dict(self.kernels(prim.file_stem).get(prim.name, []))
        if variant not in kernels:
            raise BackendError(f"mojo has no variant {variant!r} of {primitive}; "
                               f"valid: {', '.join(kernels) or 'none'}")
        built = self.module(prim.file_stem)
        name = kernels[variant]
        fn = getattr(built.module, name, None)
        if not callable(fn):
            raise BackendError(f"the built {prim.file_stem} module has no function {name!r}, "
                               f"although {prim.file_stem}.mojo registers it")
        # compile_s is the module's: one compile serves all its variants.
        return MojoKernel(prim, fn, built.seconds, built.cached, name=name)

    # ------------------------------------------------------------------ the empty-call floor
    def _any_module(self) -> build.Built:
        if self._modules:
            return next(iter(self._modules.values()))
        for stem in catalogue.stems():
            if self.source(stem).is_file():
                return self.module(stem)
        raise BackendError(f"no Mojo source in {self._sources}")

    def floor_bound(self) -> MojoBound:
        """The module's no-op bound to an empty block: the path a kernel call takes
        (bound.call -> entry -> Args -> GIL released -> unpack), with no work."""
        block = np.array([block_args.MAGIC, 0], dtype=np.int64)
        block.flags.writeable = False
        return MojoBound(self._any_module().module.noop, "noop", block, {}, {}, {})

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
