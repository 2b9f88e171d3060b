"""`cuda`: the kernels in cuda_impl/, compiled at run time by NVRTC to CUBIN for this GPU,
launched and timed through the CUDA driver API (cuda-bindings).

    prepare   compile the primitive's .cu (or load it from the on-disk cache), load the
              CUBIN into our context; Kernel.compile_s is the NVRTC time of that file
    bind      check the inputs, the launch (cuda_impl/launch.py) and free device memory, then
              allocate and upload
    call      one launch on the legacy default stream; result() copies the output back
    time_once CUDA events around one launch, after an L2 flush (harness/cuda_device.py)
    time_end_to_end  inputs in + launch + output out, from/to pinned host memory

A kernel fault (illegal address, misaligned float4, ...) poisons a CUDA context for good.
It is reported for that case as one line, the kernel is marked so its remaining cases are
skipped with the reason, and the backend drops the context and creates a fresh one for
the variants that follow. Our context is not the primary one, so cupy/torch (which use the
primary context) are not affected.
"""
from __future__ import annotations

import contextlib
import importlib.metadata as md

import numpy as np

from cuda_impl import launch as glue

from .. import catalogue
from .. import cuda_compile as cc
from .. import cuda_device as cd
from .base import Availability, Backend, BackendError, Bound, Kernel

MEMORY_HEADROOM = 256 << 20          # leave this much device memory free (driver, fragmentation)
DEFAULT_BUILD_ARCH = "sm_90"


def _version(package: str) -> str | None:
    try:
        return md.version(package)
    except md.PackageNotFoundError:
        return None


class _Session:
    """Everything that lives in our CUDA context: the context, loaded modules, the event
    timer and pinned staging buffers. Thrown away as a whole after a kernel fault."""

    def __init__(self, info: cd.DeviceInfo):
        self.info = info
        self.ctx = cd.Context(info.ordinal)
        try:
            self.timer = cd.EventTimer(self.ctx, info.l2_bytes)
        except BaseException:
            self.ctx.destroy()
            raise
        self.modules: dict[str, cd.Module] = {}
        self.pinned: dict[int, cd.PinnedBuffer] = {}

    def function(self, primitive: str, cubin: bytes, kernel: str):
        if primitive not in self.modules:
            self.modules[primitive] = cd.Module(self.ctx, cubin)
        return self.modules[primitive].function(kernel)

    def pinned_slot(self, slot: int, nbytes: int) -> cd.PinnedBuffer:
        """Pinned host buffers are slow to allocate: keep one per argument slot, grown as needed
        (bindings run one at a time, so they can share them)."""
        buf = self.pinned.get(slot)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.free()
            buf = self.pinned[slot] = cd.PinnedBuffer(self.ctx, nbytes)
        return buf

    def self_test(self) -> None:
        """A trivial round trip, to prove a fresh context works."""
        probe = cd.DeviceBuffer(self.ctx, 256)
        try:
            self.timer.time(lambda: None)
            out = probe.download(np.empty(64, dtype=np.float32))
            del out
        finally:
            probe.free()

    def close(self) -> None:
        for buf in self.pinned.values():
            buf.free()
        self.pinned.clear()
        self.timer.close()
        self.ctx.destroy()


class CudaBackend(Backend):
    name = "cuda"
    device = "gpu"
    language = "cuda_impl"
    description = "CUDA C kernels (cuda_impl/*.cu), NVRTC-compiled at run time, driver API launches"

    def __init__(self):
        self._availability: Availability | None = None
        self._info: cd.DeviceInfo | None = None
        self._session: _Session | None = None
        self._compiled: dict[str, cc.Compiled] = {}
        self._dead: str | None = None                  # why nothing more can run in this process
        self.faults: list[tuple[str, str]] = []        # (primitive/variant, CUresult name)

    # ------------------------------------------------------------------ availability
    def availability(self) -> Availability:
        if self._availability is None:
            self._availability = self._probe()
        return self._availability

    def _probe(self) -> Availability:
        try:
            nv = cc.nvrtc_version()
        except cc.NvrtcUnavailable as e:
            return Availability(False, reason=f"NVRTC unavailable: {e}",
                                hint="pip install 'nvidia-cuda-nvrtc==13.*' (part of: pip install -e '.[cuda]')")
        probe = cd.probe()
        if not probe.ok:
            return Availability(False, reason=probe.reason, hint=probe.hint)
        try:
            self._info = cd.device_info(0)
        except cd.CudaError as e:
            return Availability(False, reason=f"cannot query GPU 0: {e}", hint="check the driver with nvidia-smi")
        i = self._info
        kmod = cd.kernel_driver_version()
        return Availability(True, detail=(f"{i.name} ({i.arch}, {i.sm_count} SMs), driver "
                                          f"{kmod + ' ' if kmod else ''}(CUDA {i.driver_cuda}), NVRTC {nv[0]}.{nv[1]}"))

    def variants(self, primitive: str) -> list[str]:
        return glue.variants(primitive)

    # ------------------------------------------------------------------ compile + load
    def session(self) -> _Session:
        if self._dead:
            raise BackendError(self._dead)
        if self._session is None:
            if not self.availability().ok:
                raise BackendError(f"CUDA is not available: {self.availability().reason}")
            try:
                self._session = _Session(self._info)
            except cd.CudaError as e:
                raise BackendError(f"could not create a CUDA context: {e}") from None
        return self._session

    def compiled(self, primitive: str, arch: str | None = None, use_cache: bool = True) -> cc.Compiled:
        """The primitive's .cu compiled for `arch` (default: this GPU's)."""
        arch = arch or (self._info.arch if self._info else DEFAULT_BUILD_ARCH)
        fam = glue.family(primitive)
        return cc.compile_cubin(glue.source(primitive), f"cuda_impl/{fam.source}", arch, use_cache=use_cache)

    def prepare(self, primitive: str, variant: str) -> Kernel:
        if variant not in glue.variants(primitive):
            raise BackendError(f"cuda has no variant {variant!r} of {primitive}; "
                               f"valid: {', '.join(glue.variants(primitive)) or 'none'}")
        session = self.session()
        if primitive not in self._compiled:
            try:
                self._compiled[primitive] = self.compiled(primitive)
            except cc.CompileError as e:
                raise BackendError(str(e)) from None
        comp = self._compiled[primitive]
        kernel_name = glue.family(primitive).variant(variant).kernel
        try:
            session.function(primitive, comp.cubin, kernel_name)   # load now: fail in prepare, not later
        except cd.CudaError as e:
            raise BackendError(f"loading {kernel_name} from the CUBIN failed: {e}") from None
        return CudaKernel(self, primitive, variant, comp)

    # ------------------------------------------------------------------ faults
    def fault(self, where: str, err: cd.CudaError) -> BackendError:
        """A sticky error: drop the poisoned context, make a fresh one, say what happened."""
        self.faults.append((where, err.name))
        msg = f"kernel fault in {where}: {err.name}" + (f" ({err.text})" if err.text else "")
        old, self._session = self._session, None
        if old is not None:
            try:
                old.close()
            except Exception:
                pass
        try:
            fresh = _Session(self._info)
            fresh.self_test()
            self._session = fresh
        except Exception as e:
            self._dead = (f"the CUDA context could not be recreated after a kernel fault in {where} "
                          f"({type(e).__name__}: {e}); CUDA cases after it cannot run in this process")
            return BackendError(msg + "; the CUDA context could not be recreated, later CUDA cases are skipped")
        return BackendError(msg + "; the context was reset, later cases run in a fresh one")

    # ------------------------------------------------------------------ run-level facts
    def max_problem_bytes(self) -> int | None:
        if not self.availability().ok or self._dead:
            return None
        return max(0, self.session().ctx.free_bytes() - MEMORY_HEADROOM)

    def measure_peaks(self, quick: bool) -> dict | None:
        from ..cuda_peaks import measure
        return measure(quick, fallback_sgemm=self._own_sgemm)

    def _own_sgemm(self, n: int) -> tuple[float, str] | None:
        """No cuBLAS here: time this repo's fastest matmul kernel instead (and say so)."""
        prim = catalogue.get("matmul")
        best = None
        for variant in ("warptile", "vectorized"):
            try:
                bound = self.prepare("matmul", variant).bind(prim.make_inputs((n, n, n), "normal", 0))
            except Exception:
                continue
            try:
                bound.time_once(None)
                t = min(bound.time_once(None) for _ in range(3))
            finally:
                bound.close()
            rate = 2.0 * n ** 3 / t / 1e9
            if best is None or rate > best[0]:
                best = (rate, f"no cupy/torch for cuBLAS: this repo's cuda matmul/{variant} at {n}^3, best of 3")
        return best

    def environment(self) -> dict:
        env = {"cuda_bindings": _version("cuda-bindings"), "cuda_core": _version("cuda-core")}
        try:
            nv = cc.nvrtc_version()
            env["nvrtc"] = f"{nv[0]}.{nv[1]}"
        except cc.NvrtcUnavailable:
            env["nvrtc"] = None
        if self.availability().ok and self._info:
            i = self._info
            env.update(gpu=i.name, gpu_compute_capability=f"{i.cc[0]}.{i.cc[1]}", gpu_arch=i.arch,
                       gpu_sm_count=i.sm_count, gpu_memory_gib=round(i.total_bytes / 2**30, 1),
                       gpu_l2_bytes=i.l2_bytes, nvidia_driver=cd.kernel_driver_version(),
                       cuda_driver_api=i.driver_cuda)
        if self.faults:
            env["cuda_kernel_faults"] = [f"{w}: {n}" for w, n in self.faults]
        return env

    # ------------------------------------------------------------------ build (no GPU)
    def build_report(self, arch: str | None = None, primitives: list[str] | None = None) -> list[dict]:
        """Compile every .cu for `arch` (default: this GPU's, else sm_90); one row per variant
        with the ptxas resources, or per file with the NVRTC error."""
        if arch is None and self.availability().ok and self._info:
            arch = self._info.arch
        arch = cc.check_arch(arch or DEFAULT_BUILD_ARCH)
        rows = []
        for primitive in primitives or list(glue.FAMILIES):
            fam = glue.family(primitive)
            if fam is None:
                rows.append(dict(primitive=primitive, variant="", ok=True, detail="no CUDA kernels for this primitive"))
                continue
            try:
                comp = self.compiled(primitive, arch=arch, use_cache=False)
            except cc.CompileError as e:
                rows.append(dict(primitive=primitive, variant="*", ok=False, detail=str(e), arch=arch))
                continue
            except cc.NvrtcUnavailable as e:
                rows.append(dict(primitive=primitive, variant="*", ok=False, detail=f"NVRTC unavailable: {e}"))
                continue
            used = set()
            for v in fam.variants:
                used.add(v.kernel)
                res = comp.resources.get(v.kernel)
                if res is None:
                    rows.append(dict(primitive=primitive, variant=v.name, ok=False, kernel=v.kernel, arch=arch,
                                     detail=f"kernel {v.kernel} is not in {fam.source} (launch.py and the .cu disagree)"))
                    continue
                rows.append(dict(primitive=primitive, variant=v.name, ok=True, kernel=v.kernel, arch=arch,
                                 registers=res.registers, smem_bytes=res.smem_bytes, spill_stores=res.spill_stores,
                                 spill_loads=res.spill_loads, compile_s=comp.seconds,
                                 detail=f"{v.kernel}: {res.describe()}"))
            for kernel in sorted(set(comp.resources) - used):
                rows.append(dict(primitive=primitive, variant="", ok=True, kernel=kernel, arch=arch,
                                 detail=f"{kernel}: compiled, but no variant in launch.py launches it"))
        return rows


class CudaKernel(Kernel):
    def __init__(self, backend: CudaBackend, primitive: str, variant: str, compiled: cc.Compiled):
        self.backend, self.primitive, self.variant = backend, primitive, variant
        self.cubin = compiled.cubin
        self.compile_s, self.compile_cached = compiled.seconds, compiled.cached
        self.poisoned: str | None = None                 # set when this kernel faulted

    @property
    def where(self) -> str:
        return f"{self.primitive}/{self.variant}"

    def bind(self, inputs: dict[str, np.ndarray]) -> Bound:
        if self.poisoned:
            raise BackendError(f"not run: {self.poisoned}")
        return CudaBound(self, inputs)


class CudaBound(Bound):
    timer = "cuda_events"
    transfer = "pinned"

    def __init__(self, kernel: CudaKernel, inputs: dict[str, np.ndarray]):
        self.kernel, self.backend = kernel, kernel.backend
        self._dev: list[cd.DeviceBuffer] = []
        prim = catalogue.get(kernel.primitive)
        self._inputs = _checked_inputs(prim, inputs)
        dims = prim.dims_from_inputs(self._inputs)
        self.session = self.backend.session()
        try:
            self.launch = glue.launch(kernel.primitive, kernel.variant, dims, self.session.info.sm_count)
        except ValueError as e:
            raise BackendError(str(e)) from None
        self.out_shape = tuple(prim.output_shape(dims))
        out_bytes = 4 * int(np.prod(self.out_shape))
        need = sum(a.nbytes for a in self._inputs.values()) + out_bytes
        with self._guard():
            free = self.session.ctx.free_bytes()
            if need > free - MEMORY_HEADROOM:
                raise BackendError(f"needs {need / 2**30:.2f} GiB of device memory, "
                                   f"{free / 2**30:.2f} GiB free")
            try:
                for a in self._inputs.values():
                    buf = cd.DeviceBuffer(self.session.ctx, a.nbytes)
                    self._dev.append(buf)
                    buf.upload(a)
                self._out = cd.DeviceBuffer(self.session.ctx, out_bytes)
                self._dev.append(self._out)
            except BaseException:
                self.close()
                raise
            # Raw pointers cross into the kernel only after this: one buffer per input of
            # exactly its size, an output of exactly the output's size.
            sizes = [b.nbytes for b in self._dev]
            if sizes != [a.nbytes for a in self._inputs.values()] + [out_bytes]:
                self.close()
                raise BackendError(f"{kernel.where}: device buffers {sizes} do not match the arguments")
            self._params = cd.KernelParams([b.ptr for b in self._dev], self.launch.scalars)
            self._function = self.session.function(kernel.primitive, kernel.cubin, self.launch.kernel)

    @contextlib.contextmanager
    def _guard(self):
        """Driver errors become one-line BackendErrors; a sticky one resets the context."""
        if self.session is not self.backend._session:
            raise BackendError("not run: the CUDA context was reset after a kernel fault")
        try:
            yield
        except cd.CudaError as e:
            if e.sticky:
                self.kernel.poisoned = f"{self.kernel.where} faulted earlier in this run ({e.name})"
                raise self.backend.fault(self.kernel.where, e) from None
            raise BackendError(f"{self.kernel.where}: {e}") from None

    def _enqueue(self) -> None:
        lc = self.launch
        cd.launch(self._function, lc.grid, lc.block, lc.shared_bytes, self._params)

    def call(self) -> None:
        with self._guard(), self.session.ctx:
            self._enqueue()

    def result(self) -> np.ndarray:
        with self._guard():
            return self._out.download(np.empty(self.out_shape, dtype=np.float32))

    def poison(self) -> None:
        with self._guard():
            self._out.fill_nan()

    def time_once(self, clock) -> float:
        with self._guard():
            return self.session.timer.time(self._enqueue)

    def time_end_to_end(self) -> float:
        with self._guard():
            drv = cd.driver()
            arrays = list(self._inputs.values())
            pinned = [self.session.pinned_slot(i, a.nbytes) for i, a in enumerate(arrays)]
            pinned_out = self.session.pinned_slot(len(arrays), self._out.nbytes)
            for buf, a in zip(pinned, arrays):
                if buf.owner is not self:                 # fill once per binding, untimed
                    np.copyto(buf.view(np.float32, a.shape), a)
                    buf.owner = self

            def work():
                for dev, buf, a in zip(self._dev, pinned, arrays):
                    cd.check(drv.cuMemcpyHtoDAsync(dev.ptr, buf.ptr, a.nbytes, 0), "cuMemcpyHtoDAsync")
                self._enqueue()
                cd.check(drv.cuMemcpyDtoHAsync(pinned_out.ptr, self._out.ptr, self._out.nbytes, 0),
                         "cuMemcpyDtoHAsync")
            return self.session.timer.time(work)

    def close(self) -> None:
        for buf in self._dev:
            buf.free()
        self._dev = []
        for buf in (self.session.pinned.values() if getattr(self, "session", None) else ()):
            if buf.owner is self:
                buf.owner = None


def _checked_inputs(prim: catalogue.Primitive, inputs: dict) -> dict[str, np.ndarray]:
    """The last check before raw pointers: float32, C-contiguous, the catalogue's names and
    shapes. (harness.api.validate_inputs has already said this to the user, in detail.)"""
    names = list(prim.input_shapes(tuple(1 for _ in prim.dim_names)))
    if sorted(inputs) != sorted(names):
        raise BackendError(f"{prim.name}: expected inputs {names}, got {list(inputs)}")
    arrays = {n: inputs[n] for n in names}
    for n, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype != np.float32 or not a.flags.c_contiguous or a.size == 0:
            raise BackendError(f"{prim.name}: input {n!r} must be a non-empty C-contiguous float32 numpy array")
    dims = prim.dims_from_inputs(arrays)
    for n, shape in prim.input_shapes(dims).items():
        if arrays[n].shape != tuple(shape):
            raise BackendError(f"{prim.name}: input {n!r} has shape {arrays[n].shape}, expected {tuple(shape)}")
    return arrays
