"""`mojo`: the Mojo kernels in mojo_impl/, built into Python extension modules (see
harness/mojo_build.py) and called with the raw addresses of the numpy arrays: no copies.

A raw address carries no dtype, shape or length. A float64 array read as float32 is
silent garbage and a short array is a read past the end of a buffer (or a crashed
interpreter), so every array is checked here, in Python, before its address is taken:
bind() runs the harness's input validation (float32, C-contiguous, dimensions, matching
shapes, non-empty, finite), checks each array once more right where its address is read,
and allocates the output itself. The addresses are taken once, at bind time (each
`.ctypes.data` costs ~2 us): a timed call is only the call into Mojo.

A compile error in one module makes prepare() raise a one-line error (file:line: error)
for that primitive only; the runner records it and every other backend and primitive
still runs.
"""
from __future__ import annotations

import numpy as np

from mojo_impl import VARIANTS

from .. import catalogue, mojo_build
from ..api import validate_inputs
from ..errors import InputError
from .base import Availability, Backend, BackendError, Bound, Kernel


def _address(prim: str, name: str, array, shape: tuple) -> int:
    """The address of a validated input; refuses anything Mojo would misread."""
    if not (isinstance(array, np.ndarray) and array.dtype == np.float32 and array.flags.c_contiguous
            and array.flags.aligned and array.shape == tuple(shape) and array.size > 0):
        raise InputError(f"{prim}: input {name!r} cannot be passed to Mojo: it must be a non-empty, aligned, "
                         f"C-contiguous float32 array of shape {tuple(shape)}")
    return array.ctypes.data


class MojoBound(Bound):
    def __init__(self, fn, args: tuple, out: np.ndarray, keep: tuple):
        self._fn, self._args, self._out = fn, args, out
        self._keep = keep            # the inputs whose addresses are in args: alive while bound

    def call(self) -> None:
        self._fn(*self._args)

    def result(self) -> np.ndarray:
        return self._out

    def poison(self) -> None:
        self._out.fill(np.nan)


class MojoKernel(Kernel):
    def __init__(self, prim: catalogue.Primitive, fn, compile_s: float, cached: bool):
        self.prim, self.fn = prim, fn
        self.compile_s, self.compile_cached = compile_s, cached

    def bind(self, inputs: dict[str, np.ndarray]) -> MojoBound:
        dims = validate_inputs(self.prim, inputs)                # InputError on anything wrong
        shapes = self.prim.input_shapes(dims)
        arrays = tuple(inputs[name] for name in shapes)          # call order
        addresses = tuple(_address(self.prim.name, name, a, shapes[name]) for name, a in zip(shapes, arrays))
        out = np.empty(self.prim.output_shape(dims), dtype=np.float32)
        # Every kernel takes (input addresses..., output address, dims...), with dims in
        # the catalogue's order: (n,), (rows, cols) or (M, K, N).
        args = (*addresses, out.ctypes.data, *(int(d) for d in dims))
        return MojoBound(self.fn, args, out, keep=arrays)


class MojoBackend(Backend):
    name = "mojo"
    device = "cpu"
    language = "mojo_impl"
    description = "Mojo (CPU): mojo_impl/ built as extension modules, SIMD + threads, zero-copy"

    def __init__(self, sources=mojo_build.SOURCES, cache=None):
        self._sources = sources
        self._cache = cache                      # None: mojo_build.cache_dir()
        self._toolchain: mojo_build.Toolchain | None = None
        self._unavailable: mojo_build.MojoUnavailable | None = None
        self._modules: dict[str, mojo_build.Built] = {}            # by build key
        self._errors: dict[str, mojo_build.MojoCompileError] = {}  # by build key: fail once

    # ------------------------------------------------------------------ availability
    def toolchain(self) -> mojo_build.Toolchain:
        if self._toolchain is None and self._unavailable is None:
            try:
                self._toolchain = mojo_build.find_toolchain()
            except mojo_build.MojoUnavailable as e:
                self._unavailable = e
        if self._unavailable is not None:
            raise self._unavailable
        return self._toolchain

    def availability(self) -> Availability:
        try:
            tc = self.toolchain()
        except mojo_build.MojoUnavailable as e:
            return Availability(False, reason=e.reason, hint=e.hint)
        return Availability(True, detail=f"{tc.version}, target {tc.target_cpu}, "
                                         f"{tc.simd_width_f32} float32 SIMD lanes")

    def variants(self, primitive: str) -> list[str]:
        return list(VARIANTS.get(primitive, ()))

    # ------------------------------------------------------------------ build and prepare
    def module(self, primitive: str) -> mojo_build.Built:
        """The built module of one primitive: from this process, the disk cache, or the compiler."""
        try:
            tc = self.toolchain()
        except mojo_build.MojoUnavailable as e:
            raise BackendError(f"Mojo is not available: {e.reason}") from None
        source = self._sources / f"{primitive}.mojo"
        if not source.is_file():
            raise BackendError(f"no Mojo source for {primitive}: {source.name} is missing")
        key = mojo_build.build_key(source, tc)      # changes when the source is edited
        if key in self._errors:
            raise self._errors[key]
        if key not in self._modules:
            try:
                self._modules[key] = mojo_build.build_module(source, tc, self._cache)
            except mojo_build.MojoCompileError as e:
                self._errors[key] = e
                raise
        return self._modules[key]

    def prepare(self, primitive: str, variant: str) -> MojoKernel:
        if variant not in self.variants(primitive):
            raise BackendError(f"mojo has no variant {variant!r} of {primitive}; "
                               f"valid: {', '.join(self.variants(primitive)) or 'none'}")
        built = self.module(primitive)
        fn = getattr(built.module, variant, None)
        if fn is None:
            raise BackendError(f"{primitive}.mojo does not register a function {variant!r} "
                               f"(mojo_impl/__init__.py lists it)")
        # compile_s is the module's: one compile serves all its variants.
        return MojoKernel(catalogue.get(primitive), fn, built.seconds, built.cached)

    # ------------------------------------------------------------------ reporting
    def environment(self) -> dict:
        try:
            tc = self.toolchain()
        except mojo_build.MojoUnavailable:
            return {}
        width = tc.simd_width_f32
        loaded = next(iter(self._modules.values()), None)
        if loaded is not None:                                 # what the compiled code says
            width = int(loaded.module.simd_width())
        return {"mojo": tc.version, "mojo_target_cpu": tc.target_cpu, "mojo_simd_width_f32": width}

    def build_report(self, arch: str | None = None, primitives: list[str] | None = None) -> list[dict]:
        """Build every Mojo module (cached builds are reused and say so); one row per
        variant, or one row per module with the compiler's errors. `arch` is a CUDA notion
        and is ignored: the Mojo target is the host CPU, or $KR_MOJO_TARGET_CPU."""
        tc = self.toolchain()                                   # MojoUnavailable: build.py reports it
        rows = []
        for primitive in primitives or list(catalogue.PRIMITIVES):
            if not self.variants(primitive):
                rows.append(dict(primitive=primitive, variant="", ok=True, detail="no Mojo implementation"))
                continue
            try:
                built = self.module(primitive)
            except BackendError as e:
                rows.append(dict(primitive=primitive, variant="*", ok=False, arch=tc.target_cpu, detail=str(e)))
                continue
            how = (f"cached build, loaded in {built.seconds:.2f} s" if built.cached
                   else f"compiled in {built.seconds:.1f} s")
            if built.warnings:
                how += f", {len(built.warnings)} warnings: {built.warnings[0]}"
            for variant in self.variants(primitive):
                ok = callable(getattr(built.module, variant, None))
                rows.append(dict(primitive=primitive, variant=variant, ok=ok, arch=tc.target_cpu,
                                 compile_s=built.seconds, cached=built.cached,
                                 detail=how if ok else f"{primitive}.mojo does not register {variant!r}"))
        return rows
