"""`cuda`: the kernels in cuda_impl/, compiled at run time by NVRTC to CUBIN for this GPU,
launched and timed through the CUDA driver API (cuda-bindings).

The op layer (harness/backends/ops.py) is CudaOps: every Buffer is a device allocation in
the backend's own CUDA context, and a Call runs one (primitive, variant) - one kernel, or
its steps in file order with their scratch buffers - on buffers that stay on the device:

    ops = backend.ops()                    # None without a GPU
    x = ops.upload(a); y = ops.empty(a.shape)
    call = ops.call("relu", "vec4", {"x": x, "y": y})   # checked once: names, shapes, dtypes,
    call.run()                             # launch limits, signature; KernelParams built once
    ops.download(y)                        # a synchronous copy back (after the queued kernels)
    ops.time(call.run)                     # CUDA events around the launches, no L2 flush

upload and write are synchronous host-to-device copies; copy (device to device), poison
(NaN, or the int64 sentinel 0x8111111181111111 - two equal 32-bit halves - both by
cuMemsetD32) and every launch are enqueued on the legacy default stream, in order.

Bind/run for single measurements is OpsBound over CudaOps:

    prepare   read the variant from its .cu (kernels.py: every step's `// launch:` line, its
              scratch and its signature, checked against the declaration), compile the file
              (or load it from the on-disk cache) and load the CUBIN into our context;
              Kernel.compile_s is the NVRTC time of that file
    bind      validate the inputs against the declaration, plan the launches (a refusal is
              one line), check free device memory for every tensor, pristine copy and scratch
              buffer, then upload and allocate through the op layer and make the Call
    call      the variant's launches on the legacy default stream; outputs() copies every
              out and inout tensor back; poison() fills the out tensors; restore() copies the
              pristine inout tensors back, device to device
    time_once CUDA events around the launches, after an L2 flush (driver.EventTimer); the
              restore is enqueued before the start event, so it is never timed
    time_end_to_end  every in/inout tensor in + the launches + every out/inout tensor out,
              from/to pinned host memory

A kernel fault (illegal address, misaligned float4, ...) poisons a CUDA context for good.
It is reported as one line naming the variant launched since the last synchronisation (or
the list of them, from a model's step), that variant's remaining cases are skipped with the
reason, and the backend drops the context and creates a fresh one for what follows.
Buffers and calls of the dead context say so when used (upload again). Our context is not
the primary one, so cupy/torch (which use the primary context) are not affected.
"""
from __future__ import annotations

import contextlib
import importlib.metadata as md

import numpy as np

from ...core import catalogue
from ...core.declaration import DTYPES, INT_SENTINEL, Primitive
from ...errors import InputError
from ..base import Availability, Backend, BackendError, Bound, Kernel, OpsBound, OpsKernel
from ..ops import Buffer, Call, Ops
from . import driver as cd
from . import kernels
from . import nvrtc as cc

MEMORY_HEADROOM = 256 << 20          # leave this much device memory free (driver, fragmentation)
DEFAULT_BUILD_ARCH = "sm_90"
NAN_BITS = 0x7FC00000                # float32 quiet NaN, as one 32-bit word
SENTINEL_BITS = int(INT_SENTINEL.view(np.uint64)) & 0xFFFFFFFF     # 0x81111111: each half of the int64 sentinel
assert int(INT_SENTINEL.view(np.uint64)) == SENTINEL_BITS * 0x100000001, "the int64 sentinel must be two equal halves"

# The empty-call floor: one launch of a kernel that does nothing, through the same
# KernelParams, cuLaunchKernel and event path as every kernel.
FLOOR_FILE = "floor_noop.cu"                # what NVRTC names in a message; no such file
FLOOR_SOURCE = 'extern "C" __global__ void floor_noop(int n) { }\n'


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
        self.pinned: dict[object, cd.PinnedBuffer] = {}

    def function(self, compiled: cc.Compiled, kernel: str):
        if compiled.key not in self.modules:
            self.modules[compiled.key] = cd.Module(self.ctx, compiled.cubin)
        return self.modules[compiled.key].function(kernel)

    def pinned_slot(self, slot, nbytes: int) -> cd.PinnedBuffer:
        """Pinned host buffers are slow to allocate: keep one per slot (a tensor's role and
        name), grown as needed (bindings run one at a time, so they can share them)."""
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
    description = "CUDA C kernels (cuda_impl/*.cu), NVRTC-compiled at run time, driver API launches"

    def __init__(self):
        self._availability: Availability | None = None
        self._info: cd.DeviceInfo | None = None
        self._session: _Session | None = None
        self._compiled: dict[tuple, cc.Compiled] = {}
        self._dead: str | None = None                  # why nothing more can run in this process
        self.faults: list[tuple[str, str]] = []        # (primitive/variant, CUresult name)
        self._faulted: dict[str, str] = {}             # "primitive/variant" -> why it is not run again
        self._ops: "CudaOps | None" = None

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
        return kernels.variants(primitive)

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

    def _arch(self, arch: str | None) -> str:
        return arch or (self._info.arch if self._info else DEFAULT_BUILD_ARCH)

    def compile_source(self, source: str, filename: str, arch: str | None = None,
                       use_cache: bool = True) -> cc.Compiled:
        """One .cu source compiled for `arch` (default: this GPU's), remembered per run."""
        arch = self._arch(arch)
        key = (filename, arch, source)
        if not use_cache or key not in self._compiled:
            self._compiled[key] = cc.compile_cubin(source, filename, arch, use_cache=use_cache)
        return self._compiled[key]

    def ops(self) -> "CudaOps | None":
        """The op layer on this GPU, or None when CUDA is not available here."""
        if not self.availability().ok:
            return None
        if self._ops is None:
            self._ops = CudaOps(self)
        return self._ops

    def variant_spec(self, primitive: str, variant: str) -> kernels.Variant:
        """The variant's spec, checked; BackendError (one line) when it does not exist or fit."""
        try:
            return kernels.spec(primitive, variant)
        except KeyError as e:
            raise BackendError(e.args[0]) from None
        except kernels.KernelSpecError as e:
            raise BackendError(str(e)) from None

    def load(self, spec: kernels.Variant) -> tuple[cc.Compiled, list]:
        """The variant's file compiled (or from the cache) and every step's function loaded
        into the current session: fail here, not at the first launch."""
        session = self.session()
        try:
            comp = self.compile_source(spec.source, spec.file)
        except cc.CompileError as e:
            raise BackendError(str(e)) from None
        functions = []
        for kernel in spec.kernels:
            try:
                functions.append(session.function(comp, kernel))
            except cd.CudaError as e:
                raise BackendError(f"loading {kernel} from the CUBIN failed: {e}") from None
        return comp, functions

    def prepare(self, primitive: str, variant: str) -> Kernel:
        prim = catalogue.get(primitive)
        spec = self.variant_spec(primitive, variant)
        self.load(spec)
        return CudaKernel(self, prim, spec, self.compile_source(spec.source, spec.file))

    # ------------------------------------------------------------------ faults
    def fault(self, where: str, err: cd.CudaError, culprits: tuple[str, ...] = ()) -> BackendError:
        """A sticky error: drop the poisoned context, make a fresh one, say what happened.
        `culprits` ("primitive/variant") are not run again in this process."""
        self.faults.append((where, err.name))
        for c in culprits:
            self._faulted[c] = f"{c} faulted earlier in this run ({err.name})"
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

    def measure_floor(self, timing, clock) -> dict | None:
        """One launch of an empty kernel (1 block of 32 threads), through the same params,
        launch and event path as every kernel, L2 flush included."""
        from ...core.timing import measure
        if not self.availability().ok:
            return None
        session = self.session()
        try:
            comp = self.compile_source(FLOOR_SOURCE, FLOOR_FILE)
            fn = session.function(comp, "floor_noop")
        except (cc.CompileError, cd.CudaError) as e:
            raise BackendError(f"the empty kernel for the floor failed: {e}") from None
        params = cd.KernelParams([np.int32(0)])

        def sample(calls: int) -> float:
            def work():
                for _ in range(calls):
                    cd.launch(fn, (1, 1, 1), (32, 1, 1), 0, params)
            return session.timer.time(work) / calls

        stats = measure(sample, timing, clock, batch=False)
        return {**stats.as_dict(), "how": "CUDA events around one launch of an empty kernel (1 block of "
                                          "32 threads) after the same L2 flush, the path every kernel takes"}

    def measure_peaks(self, quick: bool) -> dict | None:
        from .peaks import measure
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
        env = {"cuda_bindings": _version("cuda-bindings")}
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
        with the ptxas resources and its spec checked against the declaration, one per file
        with the NVRTC error, one per kernel that is compiled but launched by no variant."""
        if arch is None and self.availability().ok and self._info:
            arch = self._info.arch
        arch = cc.check_arch(arch or DEFAULT_BUILD_ARCH)
        wanted = [catalogue.get(p) for p in (primitives or list(catalogue.PRIMITIVES))]
        rows = []
        for stem in dict.fromkeys(p.file_stem for p in wanted):
            mine = [p for p in wanted if p.file_stem == stem]
            try:
                src = kernels.source_file(stem)
            except kernels.KernelSpecError as e:
                rows.append(dict(primitive=mine[0].name, variant="*", ok=False, detail=str(e), arch=arch))
                continue
            if src is None:
                rows += [dict(primitive=p.name, variant="", ok=True, detail="no CUDA kernels for this primitive")
                         for p in mine]
                continue
            try:
                comp = self.compile_source(src.text, src.file, arch=arch, use_cache=False)
            except cc.CompileError as e:
                rows.append(dict(primitive=mine[0].name, variant="*", ok=False, detail=str(e), arch=arch))
                continue
            except cc.NvrtcUnavailable as e:
                rows.append(dict(primitive=mine[0].name, variant="*", ok=False, detail=f"NVRTC unavailable: {e}"))
                continue
            for p in mine:
                found = [v for v in src.variants if v.primitive == p.name]
                if not found:
                    rows.append(dict(primitive=p.name, variant="", ok=True, arch=arch,
                                     detail=f"no kernel in {src.file} has a // launch: line for {p.name}"))
                for v in found:
                    rows += _build_rows(v, p, comp, arch)
            launched = {s.kernel for s in src.specs}
            for kernel in src.entries:
                if kernel not in launched:
                    hit = catalogue.resolve(stem, kernel)
                    rows.append(dict(primitive=hit[0].name if hit else mine[0].name, variant="", ok=True,
                                     kernel=kernel, arch=arch,
                                     detail=f"{kernel}: compiled, but no // launch: line makes it a variant"))
        return rows


def _build_rows(spec: kernels.Variant, prim: Primitive, comp: cc.Compiled, arch: str) -> list[dict]:
    """One row per kernel of the variant (a step's row names its kernel), or one failing
    row when the variant does not fit its declaration."""
    try:
        kernels.check(spec, prim)
    except kernels.KernelSpecError as e:
        return [dict(primitive=prim.name, variant=spec.variant, kernel=spec.kernels[0], arch=arch, ok=False,
                     detail=str(e))]
    rows = []
    for step in spec.steps:
        base = dict(primitive=prim.name, variant=spec.variant, kernel=step.kernel, arch=arch)
        res = comp.resources.get(step.kernel)
        if res is None:
            rows.append(dict(base, ok=False, detail=f"kernel {step.kernel} is not in the CUBIN of {spec.file}"))
            continue
        rows.append(dict(base, ok=True, registers=res.registers, smem_bytes=res.smem_bytes,
                         spill_stores=res.spill_stores, spill_loads=res.spill_loads, compile_s=comp.seconds,
                         detail=f"{step.kernel}: {res.describe()}"))
    return rows


# ============================================================================= the op layer

class CudaOps(Ops):
    """Device buffers in the backend's own CUDA context, and calls that only launch.

    A Buffer's storage is a driver.DeviceBuffer of the session it was made in; after a kernel
    fault resets the context, the old buffers (and calls on them) are refused with the reason.
    Errors are BackendErrors of one line; a sticky one (a kernel fault) resets the context
    and names what was launched since the last synchronisation."""

    name = "cuda"

    def __init__(self, backend: CudaBackend):
        self.backend = backend
        self._pending: dict[str, None] = {}              # calls launched since the last sync

    # ------------------------------------------------------------------ plumbing
    def _session(self) -> _Session:
        return self.backend.session()

    @contextlib.contextmanager
    def _guard(self, what: str):
        try:
            yield
        except cd.CudaError as e:
            if e.sticky:
                culprits = tuple(self._pending)
                self._pending = {}
                where = (culprits[0] if len(culprits) == 1 else
                         f"one of {', '.join(culprits)} (launched since the last synchronisation)" if culprits
                         else what)
                raise self.backend.fault(where, e, culprits if len(culprits) == 1 else ()) from None
            raise BackendError(f"cuda {what}: {e}") from None

    def _synced(self) -> None:
        self._pending = {}

    def _storage(self, buf: Buffer, what: str) -> cd.DeviceBuffer:
        """The live device memory of one of our buffers, or a BackendError saying why not."""
        if not isinstance(buf, Buffer) or buf.ops is not self:
            raise InputError(f"cuda {what}: {buf!r} is not a buffer of cuda (upload it first)")
        dev = buf.storage
        if dev is None or not dev.ptr:
            raise BackendError(f"cuda {what}: {buf!r} has been freed")
        session = self.backend._session
        if session is None or dev.ctx is not session.ctx:
            raise BackendError(f"cuda {what}: {buf!r} was allocated in a CUDA context that has since been reset "
                               f"after a kernel fault; its contents are lost (upload it again)")
        return dev

    def _allocate(self, nbytes: int) -> cd.DeviceBuffer:
        session = self._session()
        with self._guard("allocation"):
            return cd.DeviceBuffer(session.ctx, nbytes)

    def free_bytes(self) -> int:
        session = self._session()
        with self._guard("cuMemGetInfo"):
            return session.ctx.free_bytes()

    # ------------------------------------------------------------------ buffers
    def upload(self, array: np.ndarray) -> Buffer:
        a = _contiguous(np.asarray(array))
        dtype = _dtype_name(a.dtype)
        buf = Buffer(self, a.shape, dtype, self._allocate(a.nbytes))
        self.write(buf, a)
        return buf

    def empty(self, shape, dtype: str = "float32") -> Buffer:
        if dtype not in DTYPES:
            raise InputError(f"cuda: no buffers of dtype {dtype!r} (float32 or int64)")
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(s) for s in shape)
        n = int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[dtype]).itemsize
        return Buffer(self, shape, dtype, self._allocate(n))

    def download(self, buf: Buffer) -> np.ndarray:
        dev = self._storage(buf, "download")
        out = np.empty(buf.shape, dtype=DTYPES[buf.dtype])
        with self._guard("download"):
            dev.download(out)                 # cuMemcpyDtoH: waits for the work queued before it
        self._synced()
        return out

    def write(self, buf: Buffer, array: np.ndarray) -> None:
        dev = self._storage(buf, "write")
        a = _contiguous(np.asarray(array, dtype=DTYPES[buf.dtype]))
        if a.size != buf.size:
            raise InputError(f"cuda write: {a.shape} does not fit {buf!r}")
        with self._guard("write"):
            dev.upload(a)

    def copy(self, dst: Buffer, src: Buffer) -> None:
        d, s = self._storage(dst, "copy"), self._storage(src, "copy")
        if dst.dtype != src.dtype or dst.size != src.size:
            raise InputError(f"cuda copy: {src!r} into {dst!r}: sizes or dtypes differ")
        with self._guard("copy"):
            d.copy_from(s, dst.nbytes)        # device to device, enqueued on the legacy stream

    def poison(self, buf: Buffer) -> None:
        dev = self._storage(buf, "poison")
        with self._guard("poison"):
            dev.fill_u32(NAN_BITS if buf.dtype == "float32" else SENTINEL_BITS, sync=False)

    def free(self, buf: Buffer) -> None:
        dev = buf.storage
        if dev is not None:
            dev.free()                        # a no-op for memory of a destroyed context
        buf.storage = None

    def synchronize(self) -> None:
        session = self._session()
        with self._guard("synchronize"):
            session.ctx.synchronize()
        self._synced()

    def time(self, fn) -> float:
        """Seconds between CUDA events around fn() (which enqueues on the legacy default stream,
        as every Call.run does), with NO L2 flush: an op inside a training step finds the cache
        as the previous op left it. For the per-op breakdown of a model's step."""
        return self._timed(fn, flush=False)

    def _timed(self, fn, flush: bool) -> float:
        session = self._session()
        with self._guard("timing"):
            seconds = session.timer.time(fn, flush=flush)
        self._synced()
        return seconds

    # ------------------------------------------------------------------ calls
    def call(self, primitive: str, variant: str, buffers: dict[str, Buffer], scalars: dict | None = None) -> "CudaCall":
        prim, dims = self._checked(primitive, buffers)
        where = f"{prim.name}/{variant}"
        if where in self.backend._faulted:
            raise BackendError(f"not run: {self.backend._faulted[where]}")
        spec = self.backend.variant_spec(prim.name, variant)
        session = self._session()
        try:
            plan = kernels.plan(spec, dims, session.info.sm_count)
        except ValueError as e:
            raise BackendError(str(e)) from None
        typed = prim.scalar_values(scalars)              # InputError before anything is allocated
        _, functions = self.backend.load(spec)
        for t in prim.tensors:                           # raw pointers cross into kernels after this
            dev = self._storage(buffers[t.name], f"call {where}")
            if dev.nbytes < buffers[t.name].nbytes:
                raise BackendError(f"{where}: the device buffer for {t.name!r} is smaller than its shape")
        return CudaCall(self, prim, spec, plan, functions, buffers, dims, typed)


class CudaCall(Call):
    """One (primitive, variant) bound to device buffers: its launches' KernelParams are built
    once (again by set_scalars), its scratch buffers allocated once (NaN-filled, so a step
    that reads scratch no earlier step wrote shows it), and run() only launches."""

    def __init__(self, ops: CudaOps, prim: Primitive, spec: kernels.Variant, plan: kernels.Plan, functions: list,
                 buffers: dict[str, Buffer], dims, scalars: dict):
        self.ops, self.prim, self.spec, self.plan, self.dims = ops, prim, spec, plan, dims
        self.where = f"{prim.name}/{spec.variant}"
        self.session = ops.backend._session
        self._buffers = [buffers[t.name] for t in prim.tensors]
        self._pointers = {t.name: np.uint64(buffers[t.name].storage.ptr) for t in prim.tensors}
        self.scratch: dict[str, cd.DeviceBuffer] = {}
        try:
            for name, (shape, dtype) in plan.scratch.items():
                nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
                dev = self.scratch[name] = ops._allocate(nbytes)
                with ops._guard("scratch"):
                    dev.fill_u32(NAN_BITS if np.dtype(dtype).kind == "f" else 0xFFFFFFFF, sync=False)
                self._pointers[name] = np.uint64(dev.ptr)
        except BaseException:
            self.close()
            raise
        self._functions = functions
        self._given: dict = dict(scalars)                # set_scalars changes these, keeps the rest
        self._build(scalars)

    def _build(self, typed: dict) -> None:
        self.scalars = typed
        self._launches = []
        for step, lc, fn in zip(self.spec.steps, self.plan.launches, self._functions):
            args = kernels.arguments(step, self.prim, self._pointers, self.dims, typed)
            self._launches.append((fn, lc.grid, lc.block, lc.shared_bytes, cd.KernelParams(args)))

    def set_scalars(self, **values) -> None:
        given = {**self._given, **values}
        typed = self.prim.scalar_values(given)          # InputError for an unknown or unfit value
        self._given = given
        self._build(typed)

    def run(self) -> None:
        ops = self.ops
        if self.session is not ops.backend._session:
            raise BackendError(f"{self.where}: this call's buffers were allocated in a CUDA context that has "
                               f"since been reset after a kernel fault (make the call again on new buffers)")
        for b in self._buffers:
            if b.storage is None:
                raise BackendError(f"{self.where}: {b!r} has been freed")
        ops._pending[self.where] = None
        with ops._guard(f"launch of {self.where}"), self.session.ctx:
            for fn, grid, block, smem, params in self._launches:
                cd.launch(fn, grid, block, smem, params)

    def close(self) -> None:
        """Free the scratch buffers (the tensors belong to the caller)."""
        for dev in self.scratch.values():
            dev.free()
        self.scratch = {}


def _contiguous(a: np.ndarray) -> np.ndarray:
    """C-contiguous, keeping a 0-d array 0-d (np.ascontiguousarray would make it 1-d)."""
    return a if a.flags.c_contiguous else a.copy(order="C")


def _dtype_name(dtype) -> str:
    for name, t in DTYPES.items():
        if np.dtype(t) == np.dtype(dtype):
            return name
    raise InputError(f"cuda: no tensor of dtype {dtype} can be uploaded: float32 or int64 only")


# ============================================================================= bind / run

class CudaKernel(OpsKernel):
    """A prepared variant: compiled, its functions loaded; bind() makes a CudaBound."""

    def __init__(self, backend: CudaBackend, prim: Primitive, spec: kernels.Variant, compiled: cc.Compiled):
        super().__init__(backend.ops(), prim.name, spec.variant)
        self.backend, self.spec, self.compiled = backend, spec, compiled
        self.primitive = prim.name
        self.compile_s, self.compile_cached = compiled.seconds, compiled.cached

    @property
    def where(self) -> str:
        return f"{self.primitive}/{self.variant}"

    @property
    def poisoned(self) -> str | None:
        """Why this variant is not run again (it faulted earlier in this process), or None."""
        return self.backend._faulted.get(self.where)

    def bind(self, inputs: dict[str, np.ndarray], scalars: dict | None = None) -> Bound:
        if self.poisoned:
            raise BackendError(f"not run: {self.poisoned}")
        return CudaBound(self, inputs, scalars)


class CudaBound(OpsBound):
    """OpsBound over CudaOps, timed with CUDA events: one launch sequence per sample (the
    runner asks for one call: batchable is False), an L2 flush before each, and an end-to-end
    figure through pinned host memory."""

    timer = "cuda_events"
    transfer = "pinned"
    batchable = False                # event-timed: one launch per sample

    def __init__(self, kernel: CudaKernel, inputs: dict[str, np.ndarray], scalars: dict | None = None):
        self.kernel, self.backend = kernel, kernel.backend
        self.buffers, self.pristine, self._call, self.session = {}, {}, None, None
        prim = kernel.prim
        dims = prim.validate(inputs, values=False)      # InputError: nothing has reached the device
        prim.scalar_values(scalars)                     # InputError for an unknown or unfit scalar
        ops = self.backend.ops()
        self.session = self.backend.session()
        try:
            plan = kernels.plan(kernel.spec, dims, self.session.info.sm_count)
        except ValueError as e:
            raise BackendError(str(e)) from None
        inout = sum(prim.nbytes(t, dims) for t in prim.tensors if t.role == "inout")
        need = sum(prim.nbytes(t, dims) for t in prim.tensors) + inout + plan.scratch_bytes
        free = ops.free_bytes()
        if need > free - MEMORY_HEADROOM:
            raise BackendError(f"needs {need / 2**30:.2f} GiB of device memory, {free / 2**30:.2f} GiB free")
        self._inputs = {t.name: inputs[t.name] for t in prim.inputs}
        self._bytes = {t.name: prim.nbytes(t, dims) for t in prim.tensors}
        try:
            super().__init__(ops, prim, kernel.variant, inputs, scalars)
        except BaseException:
            self.close()
            raise

    def time_once(self, clock, calls: int = 1) -> float:
        """Event time of `calls` runs of the variant (the runner asks for one), after an
        untimed restore: its copy is enqueued before the L2 flush and the start event."""
        self.restore()
        run = self._call.run
        if calls == 1:
            return self.ops._timed(run, flush=True)

        def work():
            for _ in range(calls):
                run()
        return self.ops._timed(work, flush=True) / calls

    def time_end_to_end(self) -> float:
        """Every in/inout tensor in from pinned memory, the launches, every out/inout tensor
        out to pinned memory, between two events (inout tensors come in pristine: no restore)."""
        drv = cd.driver()
        prim, session, ops = self.prim, self.session, self.ops
        if session is not self.backend._session:
            raise BackendError(f"{self.kernel.where}: not run: the CUDA context was reset after a kernel fault")
        ins = [(t.name, session.pinned_slot(("in", t.name), self._bytes[t.name])) for t in prim.inputs]
        outs = [(t.name, session.pinned_slot(("out", t.name), self._bytes[t.name])) for t in prim.outputs]
        for name, buf in ins:
            if buf.owner is not self:                     # fill once per binding, untimed
                a = self._inputs[name]
                np.copyto(buf.view(a.dtype, a.shape), a)
                buf.owner = self
        dev = {name: ops._storage(b, "end-to-end") for name, b in self.buffers.items()}
        run = self._call.run

        def work():
            for name, buf in ins:
                cd.check(drv.cuMemcpyHtoDAsync(dev[name].ptr, buf.ptr, self._bytes[name], 0), "cuMemcpyHtoDAsync")
            run()
            for name, buf in outs:
                cd.check(drv.cuMemcpyDtoHAsync(buf.ptr, dev[name].ptr, self._bytes[name], 0), "cuMemcpyDtoHAsync")
        return ops._timed(work, flush=True)

    def close(self) -> None:
        if self._call is not None:
            self._call.close()
            self._call = None
        super().close()
        for buf in (self.session.pinned.values() if self.session is not None else ()):
            if buf.owner is self:
                buf.owner = None
