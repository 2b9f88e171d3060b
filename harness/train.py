"""`python -m harness train mlp`: the same classifier trained on every backend, from the same
initial weights and batches, judged against a float64 run of the same code.

What it does, per backend (harness/models/mlp.py is the model, written once):

  1. the first AGREE_STEPS steps in lockstep with the float64 reference: each step's loss
     must agree within LOSS_RTOL * (1 + |loss|); the first step's gradients are checked
     tensor by tensor; on a disagreement, the first call and tensor that left the reference
     is found and reported;
  2. the remaining steps timed one by one (wall clock around the step; on a GPU also the
     device time from events), the first WARMUP_STEPS of them not counted; every
     PROFILE_EVERY-th step instead runs with each call timed on its own (the per-primitive
     breakdown), and is not counted either;
  3. the train loss over the whole training set and the test accuracy, at the end.

The tolerances, and why. A float32 forward pass of this model rounds along each path in
two dot products (64 and H terms), a 10-term log-sum-exp and a 64-term mean: by the
random-walk rule of the primitives' own tolerances (4 eps sqrt(n) per sum) that is ~2e-5
of the loss at H = 256, and the same holds for the weights after each AdamW step, whose
update is a few roundings of lr * r. So every step's loss may be off by 2e-5 * (1 + |loss|);
NumPy is ~40x inside that (measured: 4e-7 over the first 20 steps). The first step's
gradients (same weights, same batch: no drift yet) may be off by 1e-4 of their size plus
their rms (an element summed from cancelling terms has only the rms as its scale). After
AGREE_STEPS the curves are shown, not judged: AdamW divides by sqrt(v), and a gradient
element whose float32 rounding is larger than itself flips sign and moves its weight by
2 lr, so curves drift apart chaotically, harmlessly.

The torch-cpu peer is the same model written in PyTorch (harness/models/torch_mlp.py): the
independent check of the whole model, held to the same agreement.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import backends as backend_registry
from .backends.reference import ReferenceOps
from .core.timing import Stats
from .models import data as data_mod
from .models import mlp

AGREE_STEPS = 20
WARMUP_STEPS = 10
PROFILE_EVERY = 20
LOSS_RTOL = 2e-5
GRAD_RTOL = 1e-4
DIAGNOSE_RTOL = 1e-5             # a tensor this far from the reference is where a run went wrong
PYTHON_STEPS = 45                # pure Python: the agreement window, the warm-up and 15 timed steps
PEER = "torch-cpu"
DEFAULT_BACKENDS = ("python", "numpy", "mojo", "cuda", PEER)


@dataclass
class Run:
    backend: str
    status: str = "pass"                     # pass | fail | error | skip
    reason: str | None = None
    variants: dict = field(default_factory=dict)
    steps: int = 0
    losses: list = field(default_factory=list)
    step_times: list = field(default_factory=list)
    device_times: list = field(default_factory=list)
    breakdown: dict = field(default_factory=dict)      # call -> [seconds]
    test_accuracy: float | None = None
    train_loss: float | None = None
    agreement: dict = field(default_factory=dict)
    gradients: dict = field(default_factory=dict)
    device: str = "cpu"
    speedup_vs_python: float | None = None
    speedup_vs_numpy: float | None = None

    def stats(self) -> Stats | None:
        return Stats.of(self.step_times) if self.step_times else None

    def as_dict(self, batch: int) -> dict:
        st = self.stats()
        dev = Stats.of(self.device_times) if self.device_times else None
        return {"backend": self.backend, "status": self.status, "reason": self.reason, "device": self.device,
                "variants": self.variants, "steps": self.steps, "losses": self.losses,
                "step_time": st.as_dict() if st else None,
                "device_time": dev.as_dict() if dev else None,
                "samples_per_s": batch / st.median_s if st else None,
                "breakdown": {k: float(np.median(v)) for k, v in self.breakdown.items()},
                "test_accuracy": self.test_accuracy, "train_loss": self.train_loss,
                "agreement": self.agreement, "gradients": self.gradients,
                "speedup_vs_python": self.speedup_vs_python, "speedup_vs_numpy": self.speedup_vs_numpy}


class Progress:
    def start(self, total: int) -> None: ...
    def advance(self, description: str, n: int = 1) -> None: ...
    def stop(self) -> None: ...


# ----------------------------------------------------------------------------- the reference

@dataclass
class Reference:
    losses: list
    trace: list                              # per lockstep step: {call: {buffer: float64 array}}
    gradients: dict                          # after the first step's backward
    train_loss: float
    test_accuracy: float


def run_reference(cfg: mlp.Config, data, weights, batches, progress: Progress) -> Reference:
    model = mlp.MLP.build(ReferenceOps(), cfg, lambda p: "reference", weights)
    losses, trace, grads = [], [], None
    for t, ix in enumerate(batches, start=1):
        model.load_batch(data.x_train[ix], data.y_train[ix])
        if t <= AGREE_STEPS:
            outs = {}
            for name in mlp.FORWARD + mlp.BACKWARD:
                model.calls[name].run()
                outs[name] = model.outputs_of(name)
            if t == 1:
                grads = model.gradients()
            model.update(t)
            for name in mlp.UPDATE:
                outs[name] = model.outputs_of(name)
            trace.append(outs)
        else:
            model.step(t)
        losses.append(model.loss())
        progress.advance("float64 reference")
    return Reference(losses, trace, grads, model.dataset_loss(data.x_train, data.y_train),
                     float((model.predict(data.x_test) == data.y_test).mean()))


# ----------------------------------------------------------------------------- comparing

def tensor_report(got: np.ndarray, ref: np.ndarray, rtol: float) -> dict:
    """max error and % of tolerance used, the verifier's way: allowed = 1e-7 + rtol (|ref| + rms(ref))."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    rms = float(np.sqrt(np.mean(ref * ref))) if ref.size else 0.0
    allowed = 1e-7 + rtol * (np.abs(ref) + rms)
    err = np.abs(got - ref)
    frac = np.where(np.isfinite(err), err / allowed, np.inf)
    worst = int(np.argmax(frac)) if frac.size else 0
    return {"ok": bool(np.all(frac <= 1.0)), "max_abs_err": float(np.nanmax(err)) if err.size else 0.0,
            "tol_used_pct": float(100 * frac.reshape(-1)[worst]) if frac.size else 0.0,
            "worst_index": [int(i) for i in np.unravel_index(worst, ref.shape)] if ref.ndim else [],
            "worst_got": float(got.reshape(-1)[worst]) if got.size else None,
            "worst_ref": float(ref.reshape(-1)[worst]) if ref.size else None}


def loss_tolerance(ref_loss: float) -> float:
    return LOSS_RTOL * (1.0 + abs(ref_loss))


# ----------------------------------------------------------------------------- one backend

def run_backend(name: str, cfg: mlp.Config, steps: int, data, weights, batches, ref: Reference,
                preferred: list[str] | None, progress: Progress) -> Run:
    b = backend_registry.get(name)
    run = Run(name, device=b.device)
    avail = b.availability()
    if not avail.ok:
        return _skip(run, f"backend unavailable: {avail.reason}", progress, steps)
    ops = b.ops()
    if ops is None:
        return _skip(run, f"{name} has no op layer", progress, steps)
    missing = [p for p in sorted(set(mlp.PRIMITIVE.values())) if not b.variants(p)]
    if missing:
        return _skip(run, f"{name} has no implementation of {', '.join(missing)} yet", progress, steps)
    try:
        model = mlp.MLP.build(ops, cfg, lambda p: mlp.choose_variant(b.variants(p), preferred), weights)
        run.variants = model.variants
        _train(run, model, ops, steps, data, batches, ref, progress, gpu=b.device == "gpu")
        run.train_loss = model.dataset_loss(data.x_train, data.y_train)
        run.test_accuracy = float((model.predict(data.x_test) == data.y_test).mean())
        model.close()
    except Exception as e:                                   # one failing backend never stops the others
        first = (str(e).strip().splitlines() or [""])[0]
        run.status, run.reason = "error", f"{type(e).__name__}: {first}"
    return run


def _skip(run: Run, why: str, progress: Progress, steps: int) -> Run:
    run.status, run.reason = "skip", why
    progress.advance(f"{run.backend}: skipped", steps)
    return run


def _train(run: Run, model, ops, steps, data, batches, ref: Reference, progress: Progress, gpu: bool) -> None:
    worst = {"err": 0.0, "step": None, "tol_used_pct": 0.0}
    for t, ix in enumerate(batches[:steps], start=1):
        model.load_batch(data.x_train[ix], data.y_train[ix])
        if t <= AGREE_STEPS:
            seen = {}
            for name in mlp.FORWARD + mlp.BACKWARD:
                model.calls[name].run()
                seen[name] = model.outputs_of(name)
            if t == 1:
                got = model.gradients()
                run.gradients = {g: tensor_report(got[g], ref.gradients[g], GRAD_RTOL) for g in got}
            model.update(t)
            for name in mlp.UPDATE:
                seen[name] = model.outputs_of(name)
            loss = model.loss()
            err = abs(loss - ref.losses[t - 1])
            used = 100 * err / loss_tolerance(ref.losses[t - 1])
            if used > worst["tol_used_pct"]:
                worst = {"err": err, "step": t, "tol_used_pct": used}
            if "first_bad" not in run.agreement:     # the earliest call off the reference, loss or not
                bad = _diagnose(t, seen, ref.trace[t - 1])
                if bad:
                    run.agreement["first_bad"] = bad
        elif (t - AGREE_STEPS) % PROFILE_EVERY == 0:
            for name, s in model.profiled_step(t).items():
                run.breakdown.setdefault(name, []).append(s)
            loss = model.loss()
        else:
            t0 = time.perf_counter_ns()
            if gpu:                                  # events around the step: the device's share
                device = ops.time(lambda: model.step(t))
            else:
                model.step(t)
                device = None
            wall = (time.perf_counter_ns() - t0) * 1e-9
            if t > AGREE_STEPS + WARMUP_STEPS:
                run.step_times.append(wall)
                if device is not None:
                    run.device_times.append(device)
            loss = model.loss()
        run.losses.append(loss)
        run.steps = t
        if not math.isfinite(loss):
            run.status, run.reason = "fail", f"the loss is {loss} at step {t}"
            progress.advance(f"{run.backend}: diverged", len(batches[:steps]) - t + 1)
            return
        progress.advance(f"{run.backend}: step {t}")
    agree_n = min(AGREE_STEPS, steps)
    bad_grads = [g for g, r in run.gradients.items() if not r["ok"]]
    run.agreement.update(steps=agree_n, max_loss_err=worst["err"], worst_step=worst["step"],
                         tol_used_pct=worst["tol_used_pct"], ok=worst["tol_used_pct"] <= 100 and not bad_grads)
    if not run.agreement["ok"]:
        why = []
        if worst["tol_used_pct"] > 100:
            fb = run.agreement.get("first_bad") or {}
            why.append(f"loss off by {worst['err']:.3g} at step {worst['step']} "
                       f"({worst['tol_used_pct']:.0f}% of its tolerance)"
                       + (f"; first wrong: step {fb['step']}, {fb['call']} -> {fb['tensor']} "
                          f"(max error {fb['max_abs_err']:.3g})" if fb.get("call") else ""))
        if bad_grads:
            why.append("step-1 gradients off: " + ", ".join(
                f"{g} ({run.gradients[g]['tol_used_pct']:.0f}% of tolerance)" for g in bad_grads))
            fb = run.agreement.get("first_bad")
            if fb and worst["tol_used_pct"] <= 100:
                why.append(f"first wrong: step {fb['step']}, {fb['call']} -> {fb['tensor']} "
                           f"(max error {fb['max_abs_err']:.3g})")
        run.status, run.reason = "fail", "; ".join(why)


def _diagnose(step: int, seen: dict, ref: dict) -> dict | None:
    """The first call of a step (in call order) whose output is far from the reference's, or
    None. (A run that agrees may still show one here, from a gradient element rounded past
    zero and the weight AdamW then moved by 2 lr: it is reported only for a run that fails.)"""
    for name in mlp.FORWARD + mlp.BACKWARD + mlp.UPDATE:
        for tensor, got in seen[name].items():
            r = tensor_report(got, ref[name][tensor], DIAGNOSE_RTOL)
            if not r["ok"]:
                return {"step": step, "call": name, "primitive": mlp.PRIMITIVE[name], "tensor": tensor,
                        "max_abs_err": r["max_abs_err"], "tol_used_pct": r["tol_used_pct"]}
    return None


# ----------------------------------------------------------------------------- the command

def train(backends: list[str], cfg: mlp.Config, preferred: list[str] | None = None,
          python_steps: int = PYTHON_STEPS, progress: Progress | None = None) -> dict:
    progress = progress or Progress()
    data = data_mod.load()
    weights = mlp.initial_weights(cfg)
    batches = data_mod.batches(data, cfg.batch, cfg.steps, cfg.seed)
    plan = {b: (min(python_steps, cfg.steps) if b == "python" else cfg.steps) for b in backends}
    progress.start(cfg.steps + sum(plan.values()))
    try:
        ref = run_reference(cfg, data, weights, batches, progress)
        runs = []
        for name in backends:
            if name == PEER:
                from .models import torch_mlp
                runs.append(torch_mlp.run(cfg, data, weights, batches, ref, progress))
            else:
                runs.append(run_backend(name, cfg, plan[name], data, weights, batches, ref, preferred, progress))
    finally:
        progress.stop()
    speedups(runs)
    return {"config": cfg.as_dict(), "python_steps": plan.get("python"),
            "agreement": {"steps": AGREE_STEPS, "loss_rtol": LOSS_RTOL, "gradient_rtol": GRAD_RTOL,
                          "rule": "|loss - loss64| <= loss_rtol * (1 + |loss64|) at each of the first steps; "
                                  "step-1 gradients: |g - g64| <= 1e-7 + gradient_rtol * (|g64| + rms(g64))"},
            "reference": {"losses": ref.losses, "train_loss": ref.train_loss, "test_accuracy": ref.test_accuracy},
            "runs": [r.as_dict(cfg.batch) for r in runs], "_runs": runs}


def speedups(runs: list[Run]) -> None:
    """Median step-time ratios: one configuration, one process, agreeing runs only."""
    med = {r.backend: r.stats().median_s for r in runs if r.status == "pass" and r.step_times}
    for r in runs:
        if r.backend in med:
            r.speedup_vs_python = med["python"] / med[r.backend] if "python" in med else None
            r.speedup_vs_numpy = med["numpy"] / med[r.backend] if "numpy" in med else None


def exit_status(doc: dict) -> int:
    return 1 if any(r["status"] in ("fail", "error") for r in doc["runs"]) else 0


# ----------------------------------------------------------------------------- files and tables

SCHEMA = "kernel-rosetta-train"
SCHEMA_VERSION = 1
CSV_FIELDS = ("backend", "status", "reason", "steps", "step_median_s", "step_p25_s", "step_p75_s",
              "device_median_s", "samples_per_s", "speedup_vs_python", "speedup_vs_numpy", "train_loss",
              "test_accuracy", "max_loss_err", "loss_tol_used_pct", "worst_gradient_tol_used_pct", "variants")


def document(result: dict, env: dict) -> dict:
    doc = {k: v for k, v in result.items() if not k.startswith("_")}
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "model": "mlp", "env": env, **doc}


def csv_text(doc: dict) -> str:
    import csv
    import io
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for r in doc["runs"]:
        st, dev = r["step_time"] or {}, r["device_time"] or {}
        grads = [g["tol_used_pct"] for g in r["gradients"].values()]
        w.writerow({"backend": r["backend"], "status": r["status"], "reason": r["reason"], "steps": r["steps"],
                    "step_median_s": st.get("median_s"), "step_p25_s": st.get("p25_s"), "step_p75_s": st.get("p75_s"),
                    "device_median_s": dev.get("median_s"), "samples_per_s": r["samples_per_s"],
                    "speedup_vs_python": r["speedup_vs_python"], "speedup_vs_numpy": r["speedup_vs_numpy"],
                    "train_loss": r["train_loss"], "test_accuracy": r["test_accuracy"],
                    "max_loss_err": r["agreement"].get("max_loss_err"),
                    "loss_tol_used_pct": r["agreement"].get("tol_used_pct"),
                    "worst_gradient_tol_used_pct": max(grads) if grads else None,
                    "variants": " ".join(f"{k}={v}" for k, v in r["variants"].items())})
    return buf.getvalue()


def write(doc: dict, out_dir) -> tuple:
    from pathlib import Path

    from .core.results import atomic_write_text, to_json
    out_dir = Path(out_dir)
    jpath, cpath = out_dir / "train_mlp.json", out_dir / "train_mlp.csv"
    atomic_write_text(jpath, to_json(doc))
    atomic_write_text(cpath, csv_text(doc))
    atomic_write_text(out_dir / "train_mlp.md", markdown(doc))
    return jpath, cpath


def load(path) -> dict:
    import json
    from pathlib import Path

    from .errors import UsageError
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no such training results file: {path}") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read {path} as training results JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or doc.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(f"{path} is not a Kernel Rosetta training results file (schema {SCHEMA} v{SCHEMA_VERSION})")
    return doc


def report(doc: dict, console) -> None:
    from rich.markup import escape
    from rich.table import Table

    from .output.report import fmt_time, fmt_x
    cfg = doc["config"]
    t = Table(title=f"train mlp {cfg['inputs']}->{cfg['hidden']}->{cfg['classes']}, batch {cfg['batch']}, "
                    f"{cfg['steps']} steps, AdamW lr {cfg['lr']:g} — on digits", title_justify="left",
              caption=(f"step: median (IQR) wall time after the first {AGREE_STEPS} steps (lockstep with float64) and "
                       f"{WARMUP_STEPS} of warm-up; agreement: worst |loss - loss64| over steps 1-{AGREE_STEPS}, as "
                       f"% of {LOSS_RTOL:g} (1 + |loss|); gradients: worst % of tolerance at step 1"),
              caption_justify="left")
    for c in ("backend", "steps", "step", "IQR", "samples/s", "× python", "× numpy", "train loss", "test acc",
              "agreement", "gradients", "status"):
        t.add_column(c, justify="left" if c in ("backend", "status") else "right")
    ref = doc["reference"]
    t.add_row("float64 ref", str(cfg["steps"]), "—", "—", "—", "—", "—", f"{ref['train_loss']:.4f}",
              f"{100 * ref['test_accuracy']:.1f}%", "—", "—", "reference")
    for r in doc["runs"]:
        st = r["step_time"]
        grads = [g["tol_used_pct"] for g in r["gradients"].values()]
        a = r["agreement"]
        status = {"pass": "[green]pass[/]", "fail": "[bold red]fail[/]", "error": "[bold red]error[/]",
                  "skip": "[yellow]skip[/]"}[r["status"]]
        if r["reason"]:
            status += f" [dim]{escape(r['reason'][:90])}[/]"
        t.add_row(r["backend"], str(r["steps"]), fmt_time(st["median_s"]) if st else "—",
                  fmt_time(st["p75_s"] - st["p25_s"]) if st else "—",
                  f"{r['samples_per_s']:,.0f}" if r["samples_per_s"] else "—",
                  fmt_x(r["speedup_vs_python"]), fmt_x(r["speedup_vs_numpy"]),
                  f"{r['train_loss']:.4f}" if r["train_loss"] is not None else "—",
                  f"{100 * r['test_accuracy']:.1f}%" if r["test_accuracy"] is not None else "—",
                  f"{a['tol_used_pct']:.2g}%" if a.get("tol_used_pct") is not None else "—",
                  f"{max(grads):.2g}%" if grads else "—", status)
    console.print(t)
    if doc.get("python_steps") and doc["python_steps"] < cfg["steps"]:
        console.print(f"  [dim]pure Python ran the same configuration for {doc['python_steps']} steps only "
                      f"(the agreement window, the warm-up and a few timed steps); its loss and accuracy are "
                      f"those of step {doc['python_steps']}[/]", highlight=False)
    for r in doc["runs"]:
        if r["breakdown"]:
            total = sum(r["breakdown"].values())
            top = sorted(r["breakdown"].items(), key=lambda kv: -kv[1])[:4]
            console.print(f"  {r['backend']}: where a step goes (each call timed alone, {fmt_time(total)} in all): "
                          + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in top), highlight=False)


def markdown(doc: dict) -> str:
    """train_mlp.md: the run's table as markdown, written beside train_mlp.json (the README
    quotes it verbatim; a test checks the quote matches)."""
    from .output.report import fmt_time, fmt_x
    cfg, env, ref = doc["config"], doc["env"], doc["reference"]
    lines = [f"Machine: **{env.get('machine')}** — {env.get('cpu_model')}, {env.get('cpu_cores')} cores"
             + (f", {env['gpu']}" if env.get("gpu") else "")
             + f"; {env.get('time_utc', '')[:10]}, commit {env.get('git_commit')}.", "",
             f"MLP {cfg['inputs']} → {cfg['hidden']} → {cfg['classes']} (relu), cross-entropy, AdamW "
             f"(lr {cfg['lr']:g}, weight decay {cfg['weight_decay']:g}), batch {cfg['batch']}, {cfg['steps']} steps "
             f"on the digits training set (1,438 images); test set 359 images. Step time: median (IQR) after "
             f"{AGREE_STEPS} lockstep steps and {WARMUP_STEPS} of warm-up. Agreement: the worst step of 1-{AGREE_STEPS} "
             f"as % of the tolerance {LOSS_RTOL:g} (1 + |loss|); gradients: the worst tensor at step 1.", "",
             "| backend | step | IQR | samples/s | × Python | × NumPy | train loss | test accuracy | agreement | gradients |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
             f"| float64 reference | — | — | — | — | — | {ref['train_loss']:.4f} | {100 * ref['test_accuracy']:.1f} % | — | — |"]
    for r in doc["runs"]:
        st = r["step_time"]
        if r["status"] != "pass":
            lines.append(f"| {r['backend']} | {r['status']}: {r['reason']} | | | | | | | | |")
            continue
        grads = max(g["tol_used_pct"] for g in r["gradients"].values()) if r["gradients"] else None
        name = r["backend"] + (f" ({r['steps']} steps)" if r["steps"] < cfg["steps"] else "")
        lines.append(f"| {name} | {fmt_time(st['median_s']) if st else '—'} | "
                     f"{fmt_time(st['p75_s'] - st['p25_s']) if st else '—'} | "
                     f"{r['samples_per_s']:,.0f} | {fmt_x(r['speedup_vs_python'])} | {fmt_x(r['speedup_vs_numpy'])} | "
                     f"{r['train_loss']:.4f} | {100 * r['test_accuracy']:.1f} % | "
                     f"{r['agreement']['tol_used_pct']:.2g} % | {grads:.2g} % |")
    lines.append("")
    for r in doc["runs"]:
        if r["status"] == "pass" and r["breakdown"]:
            total = sum(r["breakdown"].values())
            by_prim: dict[str, float] = {}
            for call, s in r["breakdown"].items():
                p = mlp.PRIMITIVE[call]
                by_prim[p] = by_prim.get(p, 0.0) + s
            top = sorted(by_prim.items(), key=lambda kv: -kv[1])
            lines.append(f"- **{r['backend']}**, where a step goes by primitive (each call timed alone, "
                         f"{fmt_time(total)} in all): " + ", ".join(f"{p} {100 * s / total:.0f} %" for p, s in top))
    if doc.get("python_steps") and doc["python_steps"] < cfg["steps"]:
        lines.append(f"- Pure Python ran the same model for {doc['python_steps']} steps only: its loss and accuracy "
                     f"are those after {doc['python_steps']} steps.")
    return "\n".join(lines) + "\n"
