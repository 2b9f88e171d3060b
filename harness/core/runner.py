"""The run: for every primitive, prepare every backend's variants, check them all at odd
sizes on every applicable distribution, then climb the size ladder — for each size,
make the inputs and the float64 reference once, then verify, time and verify again
every variant on them.

Rules that keep the numbers honest:
  * every output of every verified call is checked, and every `out` tensor is poisoned
    (NaN, or a sentinel for int64) before it: an element a kernel skips can never pass by
    keeping what a previous variant or a recycled buffer left there;
  * `inout` tensors are restored from a pristine copy before every call, outside the
    timed region; `in` tensors are read-only, and a kernel that writes into one anyway
    (through a raw pointer) is caught by a checksum and fails;
  * verify before timing and again after, on a poisoned output written by one more call
    (a bit-identical output is the verified one; anything else is verified in full); a
    wrong result is reported as `fail` with its worst element and gets no speedup;
  * a case predicted to exceed the per-call time budget (from the variant's previous
    measured size, scaled by FLOPs + bytes) is skipped and says so — it is never
    extrapolated into a result; pure Python stops early this way;
  * each backend's empty-call floor is measured once, and a median within 2x of it is
    flagged "overhead-bound": it measures the call, not the kernel;
  * one failing backend or variant never stops the others: every exception becomes an
    `error` row with a one-line reason;
  * speedups are ratios of medians at the same primitive, dims and dtype, in this run.
"""
from __future__ import annotations

import os
import traceback
import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import backends as backend_registry
from ..backends.base import Availability
from ..errors import InputError
from . import catalogue, peaks as peaks_mod
from .declaration import Primitive
from .results import new_row
from .timing import Stats, TimingConfig, measure, perf_clock_ns
from .verify import verify

OVERHEAD_FACTOR = 2.0          # a median within this factor of the empty-call floor is overhead-bound


@dataclass
class RunConfig:
    primitives: list[str]
    backends: list[str]
    quick: bool = False
    sizes: list[int] | None = None              # overrides every primitive's ladder
    timing: TimingConfig = field(default_factory=TimingConfig)
    gpu_timing: TimingConfig | None = None      # device backends (default: TimingConfig.gpu(), or timing if quick)
    checks: bool = True
    seed: int = 0
    variants: list[str] | None = None          # restrict to these variant names

    def timing_for(self, device: str) -> TimingConfig:
        if device == "cpu" or self.quick:
            return self.timing
        return self.gpu_timing or TimingConfig.gpu()

    def as_dict(self) -> dict:
        return {"primitives": self.primitives, "backends": self.backends, "quick": self.quick,
                "sizes": self.sizes, "checks": self.checks, "seed": self.seed, "variants": self.variants,
                "timing": self.timing.__dict__, "gpu_timing": self.timing_for("gpu").__dict__}


class Progress:
    """What the runner reports as it goes; the CLI draws it with rich."""

    def start(self, total: int) -> None: ...
    def advance(self, description: str) -> None: ...
    def stop(self) -> None: ...


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def available_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _checksum(a: np.ndarray) -> int:
    return zlib.crc32(memoryview(np.ascontiguousarray(a)).cast("B"))


@dataclass
class Case:
    """One set of inputs with its references, shared by every backend and variant."""
    dims: tuple
    distribution: str
    stress: bool
    inputs: dict[str, np.ndarray]             # read-only: bound cases copy what they update
    scalars: dict
    refs: dict[str, np.ndarray]
    scales: dict[str, np.ndarray]
    checksums: dict[str, int]                 # of every `in` tensor, to catch a kernel writing into one


@dataclass
class Entry:
    """One prepared (backend, variant) of the current primitive, and its ladder state."""
    backend: object
    variant: str
    kernel: object
    ladder: list[int]
    timing: TimingConfig
    prev: tuple[float, float] | None = None      # (work, median seconds) at the last timed size
    stop_reason: str | None = None               # once set, the remaining sizes are skipped with it


class Runner:
    def __init__(self, config: RunConfig, progress: Progress | None = None,
                 clock: Callable[[], int] = perf_clock_ns, log: Callable[[str], None] | None = None):
        self.cfg = config
        self.progress = progress or Progress()
        self.clock = clock
        self.log = log or (lambda msg: None)
        self.rows: list[dict] = []
        self.peaks: dict[str, dict] = {}
        self.floors: dict[str, dict] = {}
        self.baselines: set[str] = set()

    # ------------------------------------------------------------------ planning
    def ladder(self, prim: Primitive, device: str = "cpu") -> list[int]:
        if self.cfg.sizes:
            return list(self.cfg.sizes)
        if self.cfg.quick:
            return list(prim.quick_ladder)
        return list(prim.gpu_ladder if device == "gpu" else prim.ladder)

    def _plan(self):
        plan = []
        for pname in self.cfg.primitives:
            prim = catalogue.get(pname)
            for bname in self.cfg.backends:
                b = backend_registry.get(bname)
                if b.baseline:
                    self.baselines.add(b.name)
                avail = b.availability()
                try:
                    variants = b.variants(pname) if avail.ok else []
                except Exception as e:
                    avail = Availability(False, reason=f"cannot list its {pname} variants: {one_line(e)}")
                    variants = []
                if self.cfg.variants:
                    variants = [v for v in variants if v in self.cfg.variants]
                plan.append((prim, b, avail, variants))
        return plan

    def _n_checks(self, prim) -> int:
        return len(prim.check_dims) * len(prim.all_distributions) if self.cfg.checks else 0

    def _steps(self, plan) -> int:
        return sum(max(1, len(variants) * (1 + self._n_checks(prim) + len(self.ladder(prim, b.device))))
                   for prim, b, avail, variants in plan)

    # ------------------------------------------------------------------ the run
    def run(self) -> list[dict]:
        plan = self._plan()
        self.progress.start(self._steps(plan) + 1)
        try:
            self.progress.advance("measuring this machine's peaks")
            self.peaks["cpu"] = peaks_mod.measure_cpu(quick=self.cfg.quick)
            for pname in self.cfg.primitives:
                self._run_primitive(catalogue.get(pname), [p for p in plan if p[0].name == pname])
            # A shared machine's bandwidth drifts: measure again at the end and keep the
            # better figure as the peak (both are recorded).
            self.peaks["cpu"] = peaks_mod.merge(self.peaks["cpu"], peaks_mod.measure_cpu(quick=self.cfg.quick))
        finally:
            self.progress.stop()
        annotate(self.rows, self.peaks, self.floors)
        compute_speedups(self.rows)
        return self.rows

    def exit_status(self) -> int:
        return exit_status(self.rows, self.baselines)

    def _row(self, prim, b, variant, **kw) -> dict:
        return new_row(primitive=prim.name, backend=b.name, variant=variant, device=b.device, **kw)

    def _run_primitive(self, prim: Primitive, plan):
        entries = []
        for _, b, avail, variants in plan:
            if not avail.ok:
                self.rows.append(self._row(prim, b, "", phase="timed", status="skip",
                                           reason=f"backend unavailable: {avail.reason}"))
                self.progress.advance(f"{prim.name} · {b.name}: skipped")
                continue
            if not variants:
                self.rows.append(self._row(prim, b, "", phase="timed", status="skip",
                                           reason=f"{b.name} has no implementation of {prim.name} yet"))
                self.progress.advance(f"{prim.name} · {b.name}: nothing to run")
                continue
            self._device_peaks(b)
            for variant in variants:
                entry = self._prepare(prim, b, variant)
                if entry:
                    entries.append(entry)
                    self._floor(b, entry.timing)
        if self.cfg.checks:
            for dims in prim.check_dims:
                for dist in prim.all_distributions:
                    case = self._case(prim, dims, dist)
                    for e in entries:
                        self.progress.advance(f"{prim.name} · {e.backend.name}/{e.variant}: check "
                                              f"{prim.shape_label(dims)} {dist}")
                        self.rows.append(self._check(prim, e, case))
                        case = self._intact(prim, case, self.rows[-1])
        for n in sorted({n for e in entries for n in e.ladder}):
            dims = prim.size_to_dims(n)
            here = [e for e in entries if n in e.ladder]
            case = None
            for e in here:
                self.progress.advance(f"{prim.name} · {e.backend.name}/{e.variant}: n={n}")
                skip = self._skip_reason(prim, e, dims)
                if skip:
                    self.rows.append(self._row(prim, e.backend, e.variant, phase="timed", size=n,
                                               shape=prim.shape_label(dims), status="skip", reason=skip,
                                               flops=prim.flop_count(dims), bytes=prim.byte_count(dims)))
                    continue
                if case is None:
                    case = self._case(prim, dims, "normal")
                row = self._timed(prim, e, n, case)
                row["compile_s"], row["compile_cached"] = e.kernel.compile_s, e.kernel.compile_cached
                self.rows.append(row)
                case = self._intact(prim, case, row)
                if row["status"] == "pass" and row["median_s"]:
                    e.prev = (prim.flop_count(dims) + prim.byte_count(dims), row["median_s"])
                elif row["status"] == "skip" and (row["reason"] or "").startswith("time budget"):
                    e.stop_reason = row["reason"]
            case = None                                  # free the inputs before the next size

    def _device_peaks(self, b):
        if b.device != "cpu" and b.device not in self.peaks:
            try:
                self.peaks[b.device] = b.measure_peaks(self.cfg.quick) or {}
            except Exception as e:
                self.log(f"{b.name}: could not measure {b.device} peaks: {one_line(e)}")
                self.peaks[b.device] = {}

    def _floor(self, b, timing: TimingConfig):
        """Each backend's empty-call floor, once per run, after its first kernel is prepared
        (a compiled backend needs a loaded module to call its no-op)."""
        if b.name in self.floors:
            return
        try:
            self.floors[b.name] = b.measure_floor(timing, self.clock) or {}
        except Exception as e:
            self.log(f"{b.name}: could not measure the empty-call floor: {one_line(e)}")
            self.floors[b.name] = {}

    def _prepare(self, prim, b, variant) -> Entry | None:
        where = f"{prim.name} · {b.name}/{variant}"
        ladder = self.ladder(prim, b.device)
        try:
            kernel = b.prepare(prim.name, variant)
        except Exception as e:
            self.rows.append(self._row(prim, b, variant, phase="timed", status="error",
                                       reason=f"prepare failed: {one_line(e)}"))
            self.log(f"{where}: prepare failed: {e}")
            for _ in range(1 + self._n_checks(prim) + len(ladder)):
                self.progress.advance(f"{where}: failed to prepare")
            return None
        self.progress.advance(f"{where}: prepared")
        return Entry(b, variant, kernel, ladder, self.cfg.timing_for(b.device))

    def _case(self, prim: Primitive, dims, dist) -> Case:
        inputs = prim.make_inputs(dims, dist, self.cfg.seed)
        scalars = prim.scalar_values()
        refs = prim.reference_outputs(inputs, scalars)
        scales = {t.name: prim.error_scale(t, inputs, refs, scalars) for t in prim.outputs if t.dtype == "float32"}
        for a in inputs.values():
            a.flags.writeable = False
        checksums = {t.name: _checksum(inputs[t.name]) for t in prim.tensors if t.role == "in"}
        return Case(dims, dist, dist in prim.stress, inputs, scalars, refs, scales, checksums)

    def _intact(self, prim: Primitive, case: Case, row: dict) -> Case:
        """A kernel that wrote into an `in` tensor fails, and the next one gets fresh inputs."""
        changed = [n for n, c in case.checksums.items() if _checksum(case.inputs[n]) != c]
        if not changed:
            return case
        row.update(status="fail", median_s=None, p25_s=None, p75_s=None, gflops=None, gbps=None,
                   reason=_wrote_inputs(changed))
        return self._case(prim, case.dims, case.distribution)

    def _skip_reason(self, prim, e: Entry, dims) -> str | None:
        if e.stop_reason:
            return e.stop_reason
        if e.prev is not None:
            predicted = e.prev[1] * (prim.flop_count(dims) + prim.byte_count(dims)) / e.prev[0]
            if predicted > e.timing.max_call_s:
                e.stop_reason = (f"time budget: predicted {predicted:.3g} s per call from the measured "
                                 f"smaller size, over the {e.timing.max_call_s:g} s budget")
                return e.stop_reason
        return self._memory_problem(prim, e.backend, dims)

    def _memory_problem(self, prim, b, dims) -> str | None:
        # every tensor once on the device, plus the pristine copy of each inout one
        need_dev = sum(prim.nbytes(t, dims) * (2 if t.role == "inout" else 1) for t in prim.tensors)
        limit = b.max_problem_bytes()
        if limit is not None and need_dev > limit:
            return (f"too large for the device: needs {need_dev / 2**30:.2f} GiB, "
                    f"{limit / 2**30:.2f} GiB free")
        need_host = 4 * prim.byte_count(dims)             # + float64 references and error scales
        avail = available_memory_bytes()
        if avail is not None and need_host > avail:
            return (f"too large for this machine: needs ~{need_host / 2**30:.1f} GiB of RAM, "
                    f"{avail / 2**30:.1f} GiB available")
        return None

    def _verify(self, prim, case: Case, outs: dict):
        return verify(prim, case.inputs, outs, case.dims, refs=case.refs, scales=case.scales, scalars=case.scalars)

    def _check(self, prim, e: Entry, case: Case) -> dict:
        row = self._row(prim, e.backend, e.variant, phase="check", shape=prim.shape_label(case.dims),
                        distribution=case.distribution, stress=case.stress, seed=self.cfg.seed)
        try:
            bound = e.kernel.bind(case.inputs, case.scalars)
            try:
                outs = bound.run()
                changed = bound.changed_inputs()
            finally:
                bound.close()
            v = self._verify(prim, case, outs)
            row.update(v.as_fields())
            row["status"] = "pass" if v.ok else "fail"
            row["reason"] = None if v.ok else v.message
            if changed:
                row.update(status="fail", reason=_wrote_inputs(changed))
        except Exception as ex:
            row.update(status="error", reason=one_line(ex))
            self.log(f"{prim.name} {e.backend.name}/{e.variant} check {case.dims} {case.distribution}:\n"
                     f"{traceback.format_exc()}")
        return row

    def _timed(self, prim: Primitive, e: Entry, n: int, case: Case) -> dict:
        dims = case.dims
        row = self._row(prim, e.backend, e.variant, phase="timed", size=n, shape=prim.shape_label(dims),
                        distribution=case.distribution, seed=self.cfg.seed,
                        flops=prim.flop_count(dims), bytes=prim.byte_count(dims))
        budget = e.timing.max_call_s
        bound = None
        try:
            bound = e.kernel.bind(case.inputs, case.scalars)
            bound.restore()
            bound.poison()
            t0 = self.clock()
            bound.call()
            first_call_s = (self.clock() - t0) * 1e-9
            outs = bound.outputs()
            v = self._verify(prim, case, outs)
            row.update(v.as_fields())
            changed = bound.changed_inputs()
            if changed or not v.ok:
                row.update(status="fail", reason=_wrote_inputs(changed) if changed else v.message)
                return row
            if first_call_s > budget * 3:
                row.update(status="skip", reason=(f"time budget: one call took {first_call_s:.3g} s, over the "
                                                  f"{budget:g} s budget (verified, not timed)"))
                return row
            verified = {k: np.array(a, copy=True) for k, a in outs.items()}
            batch = bound.batchable and not prim.has_inout        # an inout call must be restored first
            stats = measure(lambda calls: bound.time_once(self.clock, calls), e.timing, self.clock, batch=batch)
            row.update(median_s=stats.median_s, p25_s=stats.p25_s, p75_s=stats.p75_s,
                       samples=stats.samples, calls_per_sample=stats.calls_per_sample, timer=bound.timer)
            e2e = _end_to_end(bound, e.timing)
            if e2e is not None:
                row.update(e2e_median_s=e2e.median_s, e2e_p25_s=e2e.p25_s, e2e_p75_s=e2e.p75_s,
                           transfer=bound.transfer)
            # One more call into poisoned outputs, so that it has to write them all again.
            after_outs = bound.run()
            changed = bound.changed_inputs()
            if changed:
                row.update(status="fail", reason=_wrote_inputs(changed), median_s=None, p25_s=None, p75_s=None)
                return row
            # Bit-identical to the outputs verified above: the same verdict holds. Otherwise
            # (a non-deterministic kernel, or one that went wrong) verify them in full.
            same = all(isinstance(after_outs.get(k), np.ndarray) and np.array_equal(after_outs[k], a)
                       for k, a in verified.items())
            if not same:
                after = self._verify(prim, case, after_outs)
                if not after.ok:
                    row.update(after.as_fields())
                    row.update(status="fail", reason="wrong after timing: " + after.message,
                               verified_after=False, median_s=None, p25_s=None, p75_s=None)
                    return row
            row["verified_after"] = True
            row["status"] = "pass"
            row["gflops"] = row["flops"] / stats.median_s / 1e9
            row["gbps"] = row["bytes"] / stats.median_s / 1e9
        except InputError as ex:
            row.update(status="error", reason=str(ex))
        except Exception as ex:
            row.update(status="error", reason=one_line(ex))
            self.log(f"{prim.name} {e.backend.name}/{e.variant} n={n}:\n{traceback.format_exc()}")
        finally:
            if bound is not None:
                try:
                    bound.close()
                except Exception:
                    pass
        return row


def _wrote_inputs(names) -> str:
    return f"wrote into its read-only input {', '.join(repr(n) for n in names)}"


def _end_to_end(bound, timing: TimingConfig) -> Stats | None:
    first = bound.time_end_to_end()
    if first is None:
        return None
    samples = [first] + [bound.time_end_to_end() for _ in range(max(timing.min_samples, 5) - 1)]
    return Stats.of(samples)


def annotate(rows: list[dict], peaks: dict[str, dict], floors: dict[str, dict]) -> None:
    """% of peak, the sanity flags and the overhead-bound mark, once peaks and floors are final."""
    for r in rows:
        if r["phase"] != "timed" or r["status"] != "pass" or not r["median_s"]:
            continue
        prim = catalogue.PRIMITIVES[r["primitive"]]
        pct, flags = peaks_mod.pct_and_flags(r, peaks.get(r["device"]), prim.bound)
        r["pct_of_peak"] = pct
        r["peak_kind"] = ("GFLOP/s" if prim.bound == "compute" else "GB/s") if pct is not None else None
        floor = (floors.get(r["backend"]) or {}).get("median_s")
        r["floor_s"] = floor
        if floor and r["median_s"] < OVERHEAD_FACTOR * floor:
            flags.append("overhead-bound")
        r["flags"] = flags


def compute_speedups(rows: list[dict]) -> None:
    """Fill speedup_vs_python / speedup_vs_numpy on passing timed rows, same prim+dims only.

    vs python: against the fastest pure-Python variant at those dims (the classic figure);
    vs numpy:  against NumPy at those dims (the honest one).
    """
    best_python: dict[tuple, float] = {}
    numpy_t: dict[tuple, float] = {}
    for r in rows:
        if r["phase"] != "timed" or r["status"] != "pass" or not r["median_s"]:
            continue
        key = (r["primitive"], r["shape"], r["dtype"])
        if r["backend"] == "python":
            best_python[key] = min(best_python.get(key, float("inf")), r["median_s"])
        elif r["backend"] == "numpy":
            numpy_t[key] = r["median_s"]
    for r in rows:
        if r["phase"] != "timed" or r["status"] != "pass" or not r["median_s"]:
            continue
        key = (r["primitive"], r["shape"], r["dtype"])
        if key in best_python:
            r["speedup_vs_python"] = best_python[key] / r["median_s"]
        if key in numpy_t:
            r["speedup_vs_numpy"] = numpy_t[key] / r["median_s"]
            if r.get("e2e_median_s"):
                r["e2e_speedup_vs_numpy"] = numpy_t[key] / r["e2e_median_s"]


def excused(row: dict, baselines: set[str]) -> bool:
    """A baseline (NumPy, the peers) failing a stress input: measured, not held against it."""
    return row["status"] == "fail" and bool(row.get("stress")) and row["backend"] in baselines


def exit_status(rows: list[dict], baselines: set[str] = frozenset()) -> int:
    """0 when everything that ran verified, 1 when anything was wrong or crashed."""
    return 1 if any(r["status"] in ("fail", "error") and not excused(r, baselines) for r in rows) else 0
