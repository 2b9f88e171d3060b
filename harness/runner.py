"""The run: for every primitive, prepare every backend's variants, check them all at odd
sizes on every applicable distribution, then climb the size ladder — for each size,
make the inputs and the float64 reference once, then verify, time and verify again
every variant on them.

Rules that keep the numbers honest:
  * verify before timing and again after, on the output of the last timed call (a
    bit-identical output is the verified one; anything else is verified in full); a
    wrong result is reported as `fail` with its worst element and gets no speedup;
  * a case predicted to exceed the per-call time budget (from the variant's previous
    measured size, scaled by FLOPs + bytes) is skipped and says so — it is never
    extrapolated into a result; pure Python stops early this way;
  * one failing backend or variant never stops the others: every exception becomes an
    `error` row with a one-line reason;
  * speedups are ratios of medians at the same primitive, dims and dtype, in this run.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import backends as backend_registry
from . import catalogue, peaks as peaks_mod
from .api import validate_inputs
from .backends.base import Availability
from .errors import InputError
from .results import new_row
from .timing import Stats, TimingConfig, measure, perf_clock_ns
from .verify import verify


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


@dataclass
class Case:
    """One set of inputs with its reference, shared by every backend and variant."""
    dims: tuple
    distribution: str
    inputs: dict[str, np.ndarray]
    ref: np.ndarray
    scale: np.ndarray


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

    # ------------------------------------------------------------------ planning
    def ladder(self, prim: catalogue.Primitive, device: str = "cpu") -> list[int]:
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
        return len(prim.check_dims) * len(prim.distributions) if self.cfg.checks else 0

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
        annotate_peaks(self.rows, self.peaks)
        compute_speedups(self.rows)
        return self.rows

    def _row(self, prim, b, variant, **kw) -> dict:
        return new_row(primitive=prim.name, backend=b.name, variant=variant, device=b.device, **kw)

    def _run_primitive(self, prim, plan):
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
        if self.cfg.checks:
            for dims in prim.check_dims:
                for dist in prim.distributions:
                    case = self._case(prim, dims, dist)
                    for e in entries:
                        self.progress.advance(f"{prim.name} · {e.backend.name}/{e.variant}: check "
                                              f"{prim.shape_label(dims)} {dist}")
                        self.rows.append(self._check(prim, e, case))
        for n in sorted({n for e in entries for n in e.ladder}):
            dims = prim.dims_for(n)
            here = [e for e in entries if n in e.ladder]
            case = None
            for e in here:
                self.progress.advance(f"{prim.name} · {e.backend.name}/{e.variant}: n={n}")
                skip = self._skip_reason(prim, e, dims)
                if skip:
                    self.rows.append(self._row(prim, e.backend, e.variant, phase="timed", size=n,
                                               shape=prim.shape_label(dims), status="skip", reason=skip,
                                               flops=prim.flops(dims), bytes=prim.bytes(dims)))
                    continue
                if case is None:
                    case = self._case(prim, dims, "normal")
                row = self._timed(prim, e, n, case)
                row["compile_s"], row["compile_cached"] = e.kernel.compile_s, e.kernel.compile_cached
                self.rows.append(row)
                if row["status"] == "pass" and row["median_s"]:
                    e.prev = (prim.flops(dims) + prim.bytes(dims), row["median_s"])
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

    def _case(self, prim, dims, dist) -> Case:
        inputs = prim.make_inputs(dims, dist, self.cfg.seed)
        ref = prim.reference_output(inputs)
        return Case(dims, dist, inputs, ref, prim.scale(inputs, ref))

    def _skip_reason(self, prim, e: Entry, dims) -> str | None:
        if e.stop_reason:
            return e.stop_reason
        if e.prev is not None:
            predicted = e.prev[1] * (prim.flops(dims) + prim.bytes(dims)) / e.prev[0]
            if predicted > e.timing.max_call_s:
                e.stop_reason = (f"time budget: predicted {predicted:.3g} s per call from the measured "
                                 f"smaller size, over the {e.timing.max_call_s:g} s budget")
                return e.stop_reason
        return self._memory_problem(prim, e.backend, dims)

    def _memory_problem(self, prim, b, dims) -> str | None:
        need_dev = prim.bytes(dims)                       # float32 inputs + output
        limit = b.max_problem_bytes()
        if limit is not None and need_dev > limit:
            return (f"too large for the device: needs {need_dev / 2**30:.2f} GiB, "
                    f"{limit / 2**30:.2f} GiB free")
        need_host = 4 * prim.bytes(dims)                  # + float64 reference and error scale
        avail = available_memory_bytes()
        if avail is not None and need_host > avail:
            return (f"too large for this machine: needs ~{need_host / 2**30:.1f} GiB of RAM, "
                    f"{avail / 2**30:.1f} GiB available")
        return None

    def _check(self, prim, e: Entry, case: Case) -> dict:
        row = self._row(prim, e.backend, e.variant, phase="check", shape=prim.shape_label(case.dims),
                        distribution=case.distribution, seed=self.cfg.seed)
        try:
            bound = e.kernel.bind(case.inputs)
            try:
                out = bound.run()
            finally:
                bound.close()
            v = verify(prim, case.inputs, out, case.dims, ref=case.ref, scale=case.scale)
            row.update(v.as_fields())
            row["status"] = "pass" if v.ok else "fail"
            row["reason"] = None if v.ok else v.message
        except Exception as ex:
            row.update(status="error", reason=one_line(ex))
            self.log(f"{prim.name} {e.backend.name}/{e.variant} check {case.dims} {case.distribution}:\n"
                     f"{traceback.format_exc()}")
        return row

    def _timed(self, prim, e: Entry, n: int, case: Case) -> dict:
        dims = case.dims
        row = self._row(prim, e.backend, e.variant, phase="timed", size=n, shape=prim.shape_label(dims),
                        distribution=case.distribution, seed=self.cfg.seed,
                        flops=prim.flops(dims), bytes=prim.bytes(dims))
        budget = e.timing.max_call_s
        bound = None
        try:
            validate_inputs(prim, case.inputs)
            bound = e.kernel.bind(case.inputs)
            t0 = self.clock()
            out = bound.run()
            first_call_s = (self.clock() - t0) * 1e-9
            v = verify(prim, case.inputs, out, dims, ref=case.ref, scale=case.scale)
            row.update(v.as_fields())
            if not v.ok:
                row.update(status="fail", reason=v.message)
                return row
            if first_call_s > budget * 3:
                row.update(status="skip", reason=(f"time budget: one call took {first_call_s:.3g} s, over the "
                                                  f"{budget:g} s budget (verified, not timed)"))
                return row
            verified = out.copy()
            stats = measure(lambda: bound.time_once(self.clock), e.timing, self.clock)
            row.update(median_s=stats.median_s, p25_s=stats.p25_s, p75_s=stats.p75_s,
                       samples=stats.samples, timer=bound.timer)
            e2e = _end_to_end(bound, e.timing)
            if e2e is not None:
                row.update(e2e_median_s=e2e.median_s, e2e_p25_s=e2e.p25_s, e2e_p75_s=e2e.p75_s,
                           transfer=bound.transfer)
            # One more call into a NaN-poisoned output, so that it has to be written again.
            bound.poison()
            bound.call()
            after_out = bound.result()
            # Bit-identical to the output verified above: the same verdict holds. Otherwise
            # (a non-deterministic kernel, or one that went wrong) verify it in full.
            if not (isinstance(after_out, np.ndarray) and np.array_equal(after_out, verified)):
                after = verify(prim, case.inputs, after_out, dims, ref=case.ref, scale=case.scale)
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


def _end_to_end(bound, timing: TimingConfig) -> Stats | None:
    first = bound.time_end_to_end()
    if first is None:
        return None
    samples = [first] + [bound.time_end_to_end() for _ in range(max(timing.min_samples, 5) - 1)]
    return Stats.of(samples)


def annotate_peaks(rows: list[dict], peaks: dict[str, dict]) -> None:
    """% of peak and sanity flags for every passing timed row, once the peaks are final."""
    for r in rows:
        if r["phase"] != "timed" or r["status"] != "pass" or not r["median_s"]:
            continue
        prim = catalogue.PRIMITIVES[r["primitive"]]
        pct, flags = peaks_mod.pct_and_flags(r, peaks.get(r["device"]), prim.bound)
        r["pct_of_peak"] = pct
        r["peak_kind"] = ("GFLOP/s" if prim.bound == "compute" else "GB/s") if pct is not None else None
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


def exit_status(rows: list[dict]) -> int:
    """0 when everything that ran verified, 1 when anything was wrong or crashed."""
    return 1 if any(r["status"] in ("fail", "error") for r in rows) else 0
