"""The run: for every primitive x backend x variant, check correctness at odd sizes on
every applicable distribution, then climb the size ladder — verify, time, verify again.

Rules that keep the numbers honest:
  * verify before timing and again after (on the output of the last timed call);
    a wrong result is reported as `fail` with its worst element and gets no speedup;
  * a case predicted to exceed the per-call time budget (from the previous measured size,
    scaled by the FLOP count) is skipped and says so — it is never extrapolated into a
    result; pure Python stops early this way, compiled backends climb the whole ladder;
  * one failing backend or variant never stops the others: every exception becomes an
    `error` row with a one-line reason;
  * speedups are ratios of medians at the same primitive, dims and dtype, measured in
    this run.
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
    checks: bool = True
    seed: int = 0
    variants: list[str] | None = None          # restrict to these variant names

    def as_dict(self) -> dict:
        return {"primitives": self.primitives, "backends": self.backends, "quick": self.quick,
                "sizes": self.sizes, "checks": self.checks, "seed": self.seed, "variants": self.variants,
                "timing": self.timing.__dict__}


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
                variants = b.variants(pname) if avail.ok else []
                if self.cfg.variants:
                    variants = [v for v in variants if v in self.cfg.variants]
                plan.append((prim, b, avail, variants))
        return plan

    def _steps(self, plan) -> int:
        total = 0
        for prim, b, avail, variants in plan:
            n_checks = len(prim.check_dims) * len(prim.distributions) if self.cfg.checks else 0
            total += max(1, len(variants) * (1 + n_checks + len(self.ladder(prim, b.device))))
        return total

    # ------------------------------------------------------------------ the run
    def run(self) -> list[dict]:
        plan = self._plan()
        self.progress.start(self._steps(plan) + 1)
        try:
            self.progress.advance("measuring this machine's peaks")
            self.peaks["cpu"] = peaks_mod.measure_cpu(quick=self.cfg.quick)
            for prim, b, avail, variants in plan:
                if not avail.ok:
                    self.rows.append(new_row(primitive=prim.name, backend=b.name, variant="", phase="timed",
                                             status="skip", device=b.device,
                                             reason=f"backend unavailable: {avail.reason}"))
                    self.progress.advance(f"{prim.name} · {b.name}: skipped")
                    continue
                if b.device != "cpu" and b.device not in self.peaks:
                    try:
                        self.peaks[b.device] = b.measure_peaks(self.cfg.quick) or {}
                    except Exception as e:
                        self.log(f"{b.name}: could not measure {b.device} peaks: {one_line(e)}")
                        self.peaks[b.device] = {}
                if not variants:
                    self.rows.append(new_row(primitive=prim.name, backend=b.name, variant="", phase="timed",
                                             status="skip", device=b.device,
                                             reason=f"{b.name} has no implementation of {prim.name} yet"))
                    self.progress.advance(f"{prim.name} · {b.name}: nothing to run")
                    continue
                for variant in variants:
                    self._run_variant(prim, b, variant)
        finally:
            self.progress.stop()
        compute_speedups(self.rows)
        return self.rows

    def _row(self, prim, b, variant, **kw) -> dict:
        return new_row(primitive=prim.name, backend=b.name, variant=variant, device=b.device, **kw)

    def _run_variant(self, prim, b, variant):
        where = f"{prim.name} · {b.name}/{variant}"
        try:
            kernel = b.prepare(prim.name, variant)
        except Exception as e:
            steps = 1 + (len(prim.check_dims) * len(prim.distributions) if self.cfg.checks else 0) + len(
                self.ladder(prim, b.device))
            self.rows.append(self._row(prim, b, variant, phase="timed", status="error",
                                       reason=f"prepare failed: {one_line(e)}"))
            self.log(f"{where}: prepare failed: {e}")
            for _ in range(steps):
                self.progress.advance(f"{where}: failed to prepare")
            return
        compile_s, cached = kernel.compile_s, kernel.compile_cached
        self.progress.advance(f"{where}: prepared")
        if self.cfg.checks:
            for dims in prim.check_dims:
                for dist in prim.distributions:
                    self.progress.advance(f"{where}: check {prim.shape_label(dims)} {dist}")
                    self.rows.append(self._check(prim, b, kernel, variant, dims, dist))
        over_budget: str | None = None
        prev: tuple[float, float] | None = None          # (work, median seconds) at the last timed size
        for n in self.ladder(prim, b.device):
            dims = prim.dims_for(n)
            self.progress.advance(f"{where}: n={n}")
            work = prim.flops(dims) + prim.bytes(dims)
            if over_budget is None and prev is not None:
                predicted = prev[1] * work / prev[0]
                if predicted > self.cfg.timing.max_call_s:
                    over_budget = (f"time budget: predicted {predicted:.3g} s per call from the measured "
                                   f"smaller size, over the {self.cfg.timing.max_call_s:g} s budget")
            if over_budget:
                self.rows.append(self._row(prim, b, variant, phase="timed", size=n, shape=prim.shape_label(dims),
                                           status="skip", reason=over_budget,
                                           flops=prim.flops(dims), bytes=prim.bytes(dims)))
                continue
            row = self._timed(prim, b, kernel, variant, n, dims)
            row["compile_s"], row["compile_cached"] = compile_s, cached
            self.rows.append(row)
            if row["status"] == "pass" and row["median_s"]:
                prev = (work, row["median_s"])
            elif row["status"] == "skip" and row["reason"].startswith("time budget"):
                over_budget = row["reason"]

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

    def _check(self, prim, b, kernel, variant, dims, dist) -> dict:
        row = self._row(prim, b, variant, phase="check", shape=prim.shape_label(dims),
                        distribution=dist, seed=self.cfg.seed)
        try:
            inputs = prim.make_inputs(dims, dist, self.cfg.seed)
            bound = kernel.bind(inputs)
            try:
                out = bound.run()
            finally:
                bound.close()
            v = verify(prim, inputs, out, dims)
            row.update(v.as_fields())
            row["status"] = "pass" if v.ok else "fail"
            row["reason"] = None if v.ok else v.message
        except Exception as e:
            row.update(status="error", reason=one_line(e))
            self.log(f"{prim.name} {b.name}/{variant} check {dims} {dist}:\n{traceback.format_exc()}")
        return row

    def _timed(self, prim, b, kernel, variant, n, dims) -> dict:
        row = self._row(prim, b, variant, phase="timed", size=n, shape=prim.shape_label(dims),
                        distribution="normal", seed=self.cfg.seed,
                        flops=prim.flops(dims), bytes=prim.bytes(dims))
        problem = self._memory_problem(prim, b, dims)
        if problem:
            row.update(status="skip", reason=problem)
            return row
        bound = None
        try:
            inputs = prim.make_inputs(dims, "normal", self.cfg.seed)
            validate_inputs(prim, inputs)
            ref = prim.reference_output(inputs)
            bound = kernel.bind(inputs)
            t0 = self.clock()
            out = bound.run()
            first_call_s = (self.clock() - t0) * 1e-9
            v = verify(prim, inputs, out, dims, ref=ref)
            row.update(v.as_fields())
            if not v.ok:
                row.update(status="fail", reason=v.message)
                return row
            if first_call_s > self.cfg.timing.max_call_s * 3:
                row.update(status="skip", reason=(f"time budget: one call took {first_call_s:.3g} s, over the "
                                                  f"{self.cfg.timing.max_call_s:g} s budget (verified, not timed)"))
                return row
            stats = measure(lambda: bound.time_once(self.clock), self.cfg.timing, self.clock)
            row.update(median_s=stats.median_s, p25_s=stats.p25_s, p75_s=stats.p75_s,
                       samples=stats.samples, timer=bound.timer)
            e2e = _end_to_end(bound, self.cfg.timing)
            if e2e is not None:
                row.update(e2e_median_s=e2e.median_s, e2e_p25_s=e2e.p25_s, e2e_p75_s=e2e.p75_s,
                           transfer=bound.transfer)
            after = verify(prim, inputs, bound.result(), dims, ref=ref)
            row["verified_after"] = after.ok
            if not after.ok:
                row.update(after.as_fields())
                row.update(status="fail", reason="wrong after timing: " + after.message)
                return row
            row["status"] = "pass"
            row["gflops"] = row["flops"] / stats.median_s / 1e9
            row["gbps"] = row["bytes"] / stats.median_s / 1e9
            pk = self.peaks.get(b.device)
            pct, flags = peaks_mod.pct_and_flags(row, pk, prim.bound)
            row["pct_of_peak"] = pct
            row["peak_kind"] = ("GFLOP/s" if prim.bound == "compute" else "GB/s") if pct is not None else None
            row["flags"] = flags
        except InputError as e:
            row.update(status="error", reason=str(e))
        except Exception as e:
            row.update(status="error", reason=one_line(e))
            self.log(f"{prim.name} {b.name}/{variant} n={n}:\n{traceback.format_exc()}")
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
