"""`python -m harness train gpt`: a character-level GPT-2 (harness/models/gpt.py, written once
on the op layer) trained on every backend from the same initial weights and batches of the
same text, judged against a float64 run of the same code, then sampled.

Per plan (a configuration and the backends that run it):
  1. float64 reference: the first AGREE_STEPS steps, with every call's outputs at step 1
     (to say where a run that disagrees first went wrong) and every parameter's gradient;
  2. per backend: the variant of each call site (the fastest of the backend's last three,
     timed on the first batch: GPT.tune), then AGREE_STEPS steps judged against the
     reference, then the rest timed (wall clock per step; on a GPU also its events), the
     first WARMUP_STEPS of them not counted, every PROFILE_EVERY-th run call by call for
     the breakdown instead (not counted either);
  3. the validation loss over EVAL_BATCHES fixed windows, and a sample: SAMPLE_CHARS
     characters after the same prompt, drawn with the same seeded uniforms (inverse CDF of
     softmax(logits / TEMPERATURE)), so that backends whose logits agree pick the same
     characters, until a near tie falls the other way.

Pure Python runs a smaller configuration (PYTHON_CONFIG) for PYTHON_STEPS steps, and the
other backends run it too, so that every speedup is at one configuration.

The tolerances, and why. The loss of step t may be off by LOSS_RTOL (1 + |loss|): a float32
forward rounds along sums of C and 4C terms (matmuls), C-term statistics (layernorm) and
T-term softmaxes, ~4 eps sqrt(n) each by the primitives' own rule, a few 1e-6 of the loss
after L blocks; AdamW's updates add the same again per step. At the default configuration
every backend of the committed run uses under 0.2 % of it (a few 1e-7 of the loss). The
band assumes the loss curve is smooth: at a loss spike (a learning rate too high for the
model) rounding is amplified and every float32 run leaves it, which is why the model warms
its learning rate up (gpt.Config.lr_at). Step-1 gradients, from the same weights and
batch, may be off by GRAD_RTOL of (|g64| + rms(g64)) per element: backpropagation through
two layernorms and a softmax per block loses more than the forward (a committed run uses
under 1 % of it).
dbk is zero in exact arithmetic (adding a constant to every key moves each score row by
one constant, which softmax ignores), so its float32 value is rounding alone: the 1e-7
absolute floor of the rule is what it is held to.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from . import backends as backend_registry
from .backends.reference import ReferenceOps
from .core.timing import Stats
from .models import gpt, text
from .models.mlp import choose_variant
from .train import Progress, _skip, tensor_report

AGREE_STEPS = 20
WARMUP_STEPS = 10
PROFILE_EVERY = 50
LOSS_RTOL = 5e-5
GRAD_RTOL = 1e-3
DIAGNOSE_RTOL = 1e-4
EVAL_BATCHES = 8
PYTHON_CONFIG = dict(layers=1, heads=2, channels=16, context=16, batch=2)
PYTHON_STEPS = 45
PROMPT = "MENENIUS:\n"
SAMPLE_CHARS = 240
TEMPERATURE = 0.8
SAMPLE_SEED = 1234
PEER = "torch-cpu"
DEFAULT_BACKENDS = ("python", "numpy", "mojo", "cuda", PEER)
TUNE_LAST = 3                       # candidates per call site: a backend's last (fastest) variants


def loss_tolerance(ref_loss: float) -> float:
    return LOSS_RTOL * (1.0 + abs(ref_loss))


@dataclass
class GPTRun:
    backend: str
    status: str = "pass"
    reason: str | None = None
    device: str = "cpu"
    variants: dict = field(default_factory=dict)
    steps: int = 0
    losses: list = field(default_factory=list)
    step_times: list = field(default_factory=list)
    device_times: list = field(default_factory=list)
    breakdown: dict = field(default_factory=dict)          # call -> [seconds]
    call_info: dict = field(default_factory=dict)          # call -> {primitive, phase}
    agreement: dict = field(default_factory=dict)
    gradients: dict = field(default_factory=dict)
    val_loss: float | None = None
    sample: str | None = None
    tune_s: float | None = None
    tune_check: dict | None = None                         # GPT.tune's whole-pass check
    speedup_vs_python: float | None = None
    speedup_vs_numpy: float | None = None
    speedup_vs_torch: float | None = None

    def stats(self) -> Stats | None:
        return Stats.of(self.step_times) if self.step_times else None

    def as_dict(self, tokens: int) -> dict:
        st = self.stats()
        dev = Stats.of(self.device_times) if self.device_times else None
        return {"backend": self.backend, "status": self.status, "reason": self.reason, "device": self.device,
                "variants": self.variants, "steps": self.steps, "losses": self.losses,
                "step_time": st.as_dict() if st else None, "device_time": dev.as_dict() if dev else None,
                "tokens_per_s": tokens / st.median_s if st else None,
                "breakdown": {k: float(np.median(v)) for k, v in self.breakdown.items()},
                "calls": self.call_info, "agreement": self.agreement, "gradients": self.gradients,
                "val_loss": self.val_loss, "sample": self.sample, "tune_s": self.tune_s,
                "tune_check": self.tune_check,
                "speedup_vs_python": self.speedup_vs_python, "speedup_vs_numpy": self.speedup_vs_numpy,
                "speedup_vs_torch": self.speedup_vs_torch}


@dataclass
class Reference:
    losses: list
    outputs: dict                    # step 1: call -> {buffer: float64 array}
    gradients: dict


@dataclass
class Plan:
    name: str
    cfg: gpt.Config
    backends: list
    steps: int
    note: str = ""


# ----------------------------------------------------------------------------- the reference

def run_reference(cfg: gpt.Config, weights, batches, progress: Progress) -> Reference:
    model = gpt.GPT.build(ReferenceOps(), cfg, lambda p: "reference", weights)
    losses, outputs, grads = [], {}, {}
    for t, (x, y) in enumerate(batches[:AGREE_STEPS], start=1):
        model.load_batch(x, y)
        if t == 1:
            for name in model.names("forward") + model.names("backward"):
                model.calls[name].run()
                outputs[name] = model.outputs_of(name)
            grads = model.gradients()
            model.update(t)
        else:
            model.step(t)
        losses.append(model.loss())
        progress.advance(f"float64 reference: step {t}")
    model.close()
    return Reference(losses, outputs, grads)


# ----------------------------------------------------------------------------- sampling

def sample(forward_logits, corpus: text.Corpus, context: int, prompt: str = PROMPT, n: int = SAMPLE_CHARS) -> str:
    """forward_logits(ids (1, T) int64) -> logits (T, vocab) for one window. The window is
    the last T characters, padded on the right: causal attention means the padding cannot
    change the logits of the positions before it."""
    ids = list(corpus.encode(prompt))
    rng = np.random.default_rng(SAMPLE_SEED)
    for _ in range(n):
        window = ids[-context:]
        x = np.zeros((1, context), np.int64)
        x[0, :len(window)] = window
        z = np.asarray(forward_logits(x), np.float64)[len(window) - 1] / TEMPERATURE
        p = np.exp(z - z.max())
        cdf = np.cumsum(p / p.sum())
        ids.append(int(min(np.searchsorted(cdf, rng.random(), side="right"), len(cdf) - 1)))
    return corpus.decode(ids)


def _model_sampler(ops, cfg, weights, variants):
    """A forward-only model at batch 1 with the trained weights, each primitive at its default
    variant (tuning is for the training step's shapes)."""
    m = gpt.GPT.build(ops, replace(cfg, batch=1), lambda p: variants.get(p, "reference"), weights, train=False)

    def logits(x):
        m.load_batch(x, np.zeros(x.size, np.int64))
        m.forward()
        return m.logits()
    return m, logits


def _evaluate(model, evals) -> float:
    total = 0.0
    for x, y in evals:
        model.load_batch(x, y)
        model.forward()
        total += model.loss()
    return total / len(evals)


# ----------------------------------------------------------------------------- one backend

def run_backend(name: str, plan: Plan, corpus, weights, batches, evals, ref: Reference,
                preferred: list[str] | None, progress: Progress) -> GPTRun:
    cfg, steps = plan.cfg, plan.steps
    b = backend_registry.get(name)
    run = GPTRun(name, device=b.device)
    avail = b.availability()
    if not avail.ok:
        return _skip(run, f"backend unavailable: {avail.reason}", progress, steps)
    ops = b.ops()
    if ops is None:
        return _skip(run, f"{name} has no op layer", progress, steps)
    needed = ("embedding", "layernorm", "matmul", "bias_add", "transpose", "attention", "add", "gelu",
              "cross_entropy", "cross_entropy_backward", "matmul_backward", "layernorm_backward",
              "bias_add_backward", "gelu_backward", "attention_backward", "embedding_backward", "adamw")
    missing = [p for p in needed if not b.variants(p)]
    if missing:
        return _skip(run, f"{name} has no implementation of {', '.join(missing)} yet", progress, steps)
    model = None
    try:
        model = gpt.GPT.build(ops, cfg, lambda p: choose_variant(b.variants(p), preferred), weights)
        if name != "python":                  # pure Python's variants are all slow: no timing them
            keep = {p for p in model.variants if preferred and any(v in b.variants(p) for v in preferred)}
            model.load_batch(*batches[0])
            t0 = time.perf_counter()
            model.tune(lambda p: b.variants(p)[-TUNE_LAST:], keep=keep)
            run.tune_s = time.perf_counter() - t0
            run.tune_check = model.check
        model.poison()                        # step 1 is judged on what its own calls write
        run.variants = model.variant_summary()
        run.call_info = {s.name: {"primitive": s.primitive, "phase": s.phase} for s in model.specs}
        _train(run, model, ops, steps, batches, ref, progress, gpu=b.device == "gpu")
        # A run that failed the agreement is still evaluated and sampled: how far off it went shows.
        run.val_loss = _evaluate(model, evals)
        sampler, logits = _model_sampler(ops, cfg, model.weights(), model.variants)
        run.sample = sample(logits, corpus, cfg.context)
        sampler.close()
    except Exception as e:                   # one failing backend never stops the others
        first = (str(e).strip().splitlines() or [""])[0]
        run.status, run.reason = "error", f"{type(e).__name__}: {first}"
    finally:
        if model is not None:
            model.close()
    return run


def _train(run: GPTRun, model, ops, steps, batches, ref: Reference, progress, gpu: bool) -> None:
    worst = {"err": 0.0, "step": None, "tol_used_pct": 0.0}
    for t, (x, y) in enumerate(batches[:steps], start=1):
        model.load_batch(x, y)
        if t == 1:
            seen = {}
            for name in model.names("forward") + model.names("backward"):
                model.calls[name].run()
                seen[name] = model.outputs_of(name)
            got = model.gradients()
            run.gradients = {g: tensor_report(got[g], ref.gradients[g], GRAD_RTOL) for g in got}
            bad = _diagnose(model, seen, ref.outputs)
            if bad:
                run.agreement["first_bad"] = bad
            model.update(t)
        elif t <= AGREE_STEPS:
            model.step(t)
        elif (t - AGREE_STEPS) % PROFILE_EVERY == 0:
            for name, s in model.profiled_step(t).items():
                run.breakdown.setdefault(name, []).append(s)
        else:
            t0 = time.perf_counter_ns()
            if gpu:
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
        if t <= AGREE_STEPS and t <= len(ref.losses):
            err = abs(loss - ref.losses[t - 1])
            used = 100 * err / loss_tolerance(ref.losses[t - 1])
            if used > worst["tol_used_pct"]:
                worst = {"err": err, "step": t, "tol_used_pct": used}
        run.losses.append(loss)
        run.steps = t
        if not math.isfinite(loss):
            run.status, run.reason = "fail", f"the loss is {loss} at step {t}"
            progress.advance(f"{run.backend}: diverged", len(batches[:steps]) - t + 1)
            return
        progress.advance(f"{run.backend}: step {t}")
    _judge(run, worst, min(AGREE_STEPS, steps))


def _judge(run: GPTRun, worst: dict, agree_n: int) -> None:
    bad_grads = [g for g, r in run.gradients.items() if not r["ok"]]
    run.agreement.update(steps=agree_n, max_loss_err=worst["err"], worst_step=worst["step"],
                         tol_used_pct=worst["tol_used_pct"], ok=worst["tol_used_pct"] <= 100 and not bad_grads)
    if run.agreement["ok"]:
        return
    why = []
    if worst["tol_used_pct"] > 100:
        why.append(f"loss off by {worst['err']:.3g} at step {worst['step']} ({worst['tol_used_pct']:.0f}% of its tolerance)")
    if bad_grads:
        why.append("step-1 gradients off: " + ", ".join(
            f"{g} ({run.gradients[g]['tol_used_pct']:.0f}% of tolerance)" for g in bad_grads[:4])
            + (f" and {len(bad_grads) - 4} more" if len(bad_grads) > 4 else ""))
    fb = run.agreement.get("first_bad")
    if fb:
        why.append(f"first wrong at step 1: {fb['call']} ({fb['primitive']}) -> {fb['tensor']} "
                   f"(max error {fb['max_abs_err']:.3g})")
    run.status, run.reason = "fail", "; ".join(why)


def _diagnose(model, seen: dict, ref: dict) -> dict | None:
    for name in model.names("forward") + model.names("backward"):
        for tensor, got in seen[name].items():
            r = tensor_report(got, ref[name][tensor], DIAGNOSE_RTOL)
            if not r["ok"]:
                return {"call": name, "primitive": model.spec(name).primitive, "tensor": tensor,
                        "max_abs_err": r["max_abs_err"], "tol_used_pct": r["tol_used_pct"]}
    return None


# ----------------------------------------------------------------------------- the PyTorch twin

def run_torch(plan: Plan, corpus, weights, batches, evals, ref: Reference, progress: Progress) -> GPTRun:
    from .models import torch_gpt
    cfg, steps = plan.cfg, plan.steps
    run = GPTRun(PEER, variants={"model": "torch.nn.functional + torch.optim.AdamW"})
    why = torch_gpt.available()
    if why:
        return _skip(run, why, progress, steps)
    import torch
    run.variants["torch"] = torch.__version__
    model = torch_gpt.TorchGPT(cfg, weights)
    worst = {"err": 0.0, "step": None, "tol_used_pct": 0.0}
    for t, (x, y) in enumerate(batches[:steps], start=1):
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        t0 = time.perf_counter_ns()
        model.opt.zero_grad(set_to_none=False)
        loss_t = model.loss(x, y)
        loss_t.backward()
        if t == 1:
            got = model.gradients()
            run.gradients = {g: tensor_report(got[g], ref.gradients[g], GRAD_RTOL) for g in got}
        model.set_lr(t)
        model.opt.step()
        wall = (time.perf_counter_ns() - t0) * 1e-9
        loss = float(loss_t.item())
        run.losses.append(loss)
        run.steps = t
        if t <= AGREE_STEPS:
            err = abs(loss - ref.losses[t - 1])
            used = 100 * err / loss_tolerance(ref.losses[t - 1])
            if used > worst["tol_used_pct"]:
                worst = {"err": err, "step": t, "tol_used_pct": used}
        elif t > AGREE_STEPS + WARMUP_STEPS:
            run.step_times.append(wall)
        progress.advance(f"{PEER}: step {t}")
    _judge(run, worst, min(AGREE_STEPS, steps))
    with torch.no_grad():
        run.val_loss = float(np.mean([model.loss(torch.from_numpy(x), torch.from_numpy(y)).item() for x, y in evals]))
        run.sample = sample(lambda x: model.logits(torch.from_numpy(x))[0].numpy(), corpus, cfg.context)
    return run


# ----------------------------------------------------------------------------- the command

def plans(backends: list[str], cfg: gpt.Config) -> list[Plan]:
    main = [b for b in backends if b != "python"]
    out = []
    if main:
        out.append(Plan("main", cfg, main, cfg.steps))
    if "python" in backends:
        small = gpt.Config(**{**PYTHON_CONFIG, "steps": PYTHON_STEPS, "lr": cfg.lr,
                              "warmup": cfg.warmup, "seed": cfg.seed,
                              "vocab": cfg.vocab})
        out.append(Plan("python-sized", small, backends, min(PYTHON_STEPS, cfg.steps),
                        note=f"pure Python trains a smaller model ({small.describe()}) for {min(PYTHON_STEPS, cfg.steps)} "
                             f"steps; every backend runs it too, for speedups at one configuration"))
    return out


def train(backends: list[str], cfg: gpt.Config, preferred: list[str] | None = None,
          progress: Progress | None = None) -> dict:
    progress = progress or Progress()
    corpus = text.load()
    if cfg.vocab != corpus.vocab:
        cfg = replace(cfg, vocab=corpus.vocab)
    todo = plans(backends, cfg)
    progress.start(sum(min(AGREE_STEPS, p.steps) + p.steps * len(p.backends) for p in todo))
    out = []
    try:
        for plan in todo:
            pc = plan.cfg
            weights = gpt.initial_weights(pc)
            batches = text.batches(corpus.train, pc.batch, pc.context, plan.steps, pc.seed)
            evals = text.evaluation_batches(corpus.val, pc.batch, pc.context, EVAL_BATCHES)
            ref = run_reference(pc, weights, batches, progress)
            runs = []
            for name in plan.backends:
                if name == PEER:
                    runs.append(run_torch(plan, corpus, weights, batches, evals, ref, progress))
                else:
                    runs.append(run_backend(name, plan, corpus, weights, batches, evals, ref, preferred, progress))
            speedups(runs)
            out.append({"name": plan.name, "note": plan.note, "config": pc.as_dict(), "steps": plan.steps,
                        "step_flops": pc.step_flops(), "tokens_per_step": pc.tokens,
                        "reference": {"losses": ref.losses}, "runs": [r.as_dict(pc.tokens) for r in runs]})
    finally:
        progress.stop()
    return {"corpus": {"file": text.PATH.name, "characters": int(len(corpus.train) + len(corpus.val)),
                       "train_characters": int(len(corpus.train)), "val_characters": int(len(corpus.val)),
                       "vocab": corpus.vocab, "unigram_baseline": text.unigram_baseline(corpus)},
            "sampling": {"prompt": PROMPT, "characters": SAMPLE_CHARS, "temperature": TEMPERATURE,
                         "seed": SAMPLE_SEED},
            "agreement": {"steps": AGREE_STEPS, "loss_rtol": LOSS_RTOL, "gradient_rtol": GRAD_RTOL,
                          "rule": "|loss - loss64| <= loss_rtol * (1 + |loss64|) at each of the first steps; "
                                  "step-1 gradients: |g - g64| <= 1e-7 + gradient_rtol * (|g64| + rms(g64))"},
            "plans": out}


def speedups(runs: list[GPTRun]) -> None:
    med = {r.backend: r.stats().median_s for r in runs if r.status == "pass" and r.step_times}
    for r in runs:
        if r.backend in med:
            r.speedup_vs_python = med["python"] / med[r.backend] if "python" in med else None
            r.speedup_vs_numpy = med["numpy"] / med[r.backend] if "numpy" in med else None
            r.speedup_vs_torch = med[PEER] / med[r.backend] if PEER in med else None


def exit_status(doc: dict) -> int:
    return 1 if any(r["status"] in ("fail", "error") for p in doc["plans"] for r in p["runs"]) else 0
