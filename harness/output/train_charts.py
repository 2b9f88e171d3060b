"""Charts of a training run (train_mlp.json): PNG + SVG, like the primitives' charts.

  loss_mlp        every backend's loss per step over the float64 curve (log scale); the
                  agreement window shaded
  step_time_mlp   median step time per backend, IQR as error bars, samples/s on each bar
  breakdown_mlp   where a step's time goes: each primitive call's median time, stacked by
                  phase (forward, backward, update), one bar per backend

and of a GPT run (train_gpt.json):

  loss_gpt        the loss curves (running mean) with the unigram baseline and the
                  validation losses
  step_time_gpt   median step per backend and configuration
  breakdown_gpt   the step split into matmul, attention and the rest, forward, backward
                  and update, one bar per backend and configuration
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .plots import _save, _subtitle, color  # noqa: E402

PHASE_COLORS = {"forward": "#4d77cf", "backward": "#ff6d00", "update": "#76b900"}


def _passing(doc):
    return [r for r in doc["runs"] if r["status"] == "pass"]


def loss_chart(doc, out_dir) -> list[Path]:
    """Top: the loss curves over the float64 one. Bottom: how far each is from it, per step,
    with the tolerance they are held to over the judged steps."""
    import numpy as np
    fig, (ax, dx) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    ref = np.asarray(doc["reference"]["losses"])
    steps = doc["agreement"]["steps"]
    ax.plot(range(1, len(ref) + 1), ref, color="black", lw=2.2, label="float64 reference", zorder=1)
    for i, r in enumerate(doc["runs"]):
        if not r["losses"]:
            continue
        c = color(r["backend"], i)
        label = r["backend"] + ("" if r["status"] == "pass" else f" ({r['status']})")
        losses = np.asarray(r["losses"])
        ax.plot(range(1, len(losses) + 1), losses, lw=1.0, color=c, ls="-" if r["status"] == "pass" else "--",
                label=label, zorder=2)
        diff = np.abs(losses - ref[:len(losses)])
        dx.plot(range(1, len(diff) + 1), np.maximum(diff, 1e-12), lw=0.9, color=c, label=label)
    tol = doc["agreement"]["loss_rtol"] * (1 + np.abs(ref[:steps]))
    dx.plot(range(1, steps + 1), tol, color="red", lw=1.2, ls=":", label="tolerance (judged steps)")
    for a in (ax, dx):
        a.axvspan(1, steps, color="gray", alpha=0.12, lw=0)
        a.set_yscale("log")
        a.grid(True, which="both", alpha=0.25)
    ax.set_ylabel("training loss (batch mean)")
    dx.set_ylabel("|loss - float64 loss|")
    dx.set_xlabel(f"step (shaded: steps 1-{steps}, judged against the float64 run)")
    ax.legend(fontsize=8)
    dx.legend(fontsize=7, ncol=2)
    cfg = doc["config"]
    ax.set_title(f"MLP {cfg['inputs']}->{cfg['hidden']}->{cfg['classes']} on digits, batch {cfg['batch']}: "
                 f"loss per step\n{_subtitle(doc['env'])}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, "loss_mlp")


def step_time_chart(doc, out_dir) -> list[Path]:
    runs = [r for r in _passing(doc) if r["step_time"]]
    if not runs:
        return []
    runs.sort(key=lambda r: r["step_time"]["median_s"])
    fig, ax = plt.subplots(figsize=(7, 0.5 * len(runs) + 1.6))
    med = [r["step_time"]["median_s"] * 1e3 for r in runs]
    lo = [(r["step_time"]["median_s"] - r["step_time"]["p25_s"]) * 1e3 for r in runs]
    hi = [(r["step_time"]["p75_s"] - r["step_time"]["median_s"]) * 1e3 for r in runs]
    ax.barh(range(len(runs)), med, xerr=[lo, hi], color=[color(r["backend"], i) for i, r in enumerate(runs)],
            capsize=3)
    ax.set_yticks(range(len(runs)), [r["backend"] for r in runs])
    ax.set_xscale("log")
    for i, r in enumerate(runs):
        ax.text(med[i], i, f"  {med[i]:.3g} ms, {r['samples_per_s']:,.0f} samples/s", va="center", fontsize=7)
    ax.margins(x=0.6)
    ax.set_xlabel("median step time (ms, log scale; IQR bars)")
    ax.set_title(f"MLP training step, same configuration on every backend\n{_subtitle(doc['env'])}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, "step_time_mlp")


def breakdown_chart(doc, out_dir, phases: dict) -> list[Path]:
    """Each backend's step as 100 %: each call's share (coloured by phase), the total at the end."""
    runs = [r for r in _passing(doc) if r["breakdown"]]
    if not runs:
        return []
    calls = list(runs[0]["breakdown"])
    fig, ax = plt.subplots(figsize=(9.5, 0.7 * len(runs) + 2.0))
    for i, r in enumerate(runs):
        total = sum(r["breakdown"].values())
        left = 0.0
        for c in calls:
            w = 100 * r["breakdown"].get(c, 0.0) / total
            ax.barh(i, w, left=left, color=PHASE_COLORS[phases[c]], edgecolor="white", lw=0.6)
            if w > 6:
                ax.text(left + w / 2, i, c, ha="center", va="center", fontsize=6, color="white")
            left += w
        ax.text(101, i, f"{total * 1e6:,.0f} µs", va="center", fontsize=7)
    ax.set_yticks(range(len(runs)), [r["backend"] for r in runs])
    ax.set_xlim(0, 112)
    ax.set_xlabel("% of the step (each call timed on its own, median over profiled steps)")
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color=c, label=p) for p, c in PHASE_COLORS.items()], fontsize=8,
              loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3)
    ax.set_title(f"Where a training step's time goes, by primitive call\n{_subtitle(doc['env'])}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, "breakdown_mlp")


def all_charts(doc: dict, out_dir, phases: dict) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return loss_chart(doc, out_dir) + step_time_chart(doc, out_dir) + breakdown_chart(doc, out_dir, phases)


# ----------------------------------------------------------------------------- the GPT (train_gpt.json)

KIND_COLORS = {"matmul": "#4d77cf", "attention": "#d62728", "rest": "#8c8c8c"}
PHASE_HATCH = {"forward": "", "backward": "//", "update": ".."}


def gpt_loss_chart(doc, out_dir) -> list[Path]:
    """The main plan's loss curves (a 20-step running mean over the batch losses) with the
    unigram baseline, the validation losses at the end, and the judged steps shaded."""
    import numpy as np
    p = doc["plans"][0]
    fig, ax = plt.subplots(figsize=(8, 5))
    base = doc["corpus"]["unigram_baseline"]
    ax.axhline(base, color="black", ls=":", lw=1.2, label=f"unigram baseline {base:.3f}")
    for i, r in enumerate(p["runs"]):
        if not r["losses"]:
            continue
        c = color(r["backend"], i)
        loss = np.asarray(r["losses"])
        k = min(20, len(loss))
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(range(k, len(loss) + 1), smooth, color=c, lw=1.2,
                label=r["backend"] + ("" if r["status"] == "pass" else f" ({r['status']})"))
        if r["val_loss"] is not None:
            ax.plot([len(loss)], [r["val_loss"]], marker="o", color=c, ms=5)
    ax.axvspan(1, doc["agreement"]["steps"], color="gray", alpha=0.12, lw=0)
    ax.set_xlabel(f"step (shaded: steps 1-{doc['agreement']['steps']}, judged against float64; dots: validation loss)")
    ax.set_ylabel("training loss, nats/char (20-step running mean)")
    ax.grid(True, alpha=0.25)
    ax.legend(fontsize=8)
    c = p["config"]
    ax.set_title(f"GPT L={c['layers']} H={c['heads']} C={c['channels']} T={c['context']} B={c['batch']} on "
                 f"{doc['corpus']['file']}\n{_subtitle(doc['env'])}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, "loss_gpt")


def gpt_step_time_chart(doc, out_dir) -> list[Path]:
    rows = [(p, r) for p in doc["plans"] for r in p["runs"] if r["status"] == "pass" and r["step_time"]]
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.8))
    labels, med = [], []
    for i, (p, r) in enumerate(rows):
        c = p["config"]
        labels.append(f"{r['backend']} · {c['parameters'] / 1e3:,.0f} k params")
        med.append(r["step_time"]["median_s"] * 1e3)
        ax.barh(i, med[-1], color=color(r["backend"], i))
        ax.text(med[-1], i, f"  {med[-1]:.3g} ms, {r['tokens_per_s']:,.0f} tok/s", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.margins(x=0.6)
    ax.set_xlabel("median training step (ms, log scale)")
    ax.set_title(f"GPT training step per backend and configuration\n{_subtitle(doc['env'])}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, "step_time_gpt")


def gpt_breakdown_chart(doc, out_dir) -> list[Path]:
    """Each backend's profiled step as 100 %: matmul, attention and the rest (colours), each
    split into forward, backward and update (hatching)."""
    from matplotlib.patches import Patch

    from ..models import gpt as gpt_model
    rows = [(p, r) for p in doc["plans"] for r in p["runs"] if r["status"] == "pass" and r["breakdown"]]
    if not rows:
        return []
    fig, ax = plt.subplots(figsize=(9.5, 0.6 * len(rows) + 2.2))
    for i, (p, r) in enumerate(rows):
        total = sum(r["breakdown"].values())
        parts: dict = {}
        for call, s in r["breakdown"].items():
            info = r["calls"].get(call, {})
            key = (gpt_model.kind_of(info.get("primitive", "")), info.get("phase", "forward"))
            parts[key] = parts.get(key, 0.0) + s
        left = 0.0
        for kind in KIND_COLORS:
            for phase in PHASE_HATCH:
                w = 100 * parts.get((kind, phase), 0.0) / total
                if w <= 0:
                    continue
                ax.barh(i, w, left=left, color=KIND_COLORS[kind], hatch=PHASE_HATCH[phase], edgecolor="white", lw=0.6)
                if w > 7:
                    ax.text(left + w / 2, i, f"{kind} {phase[:3]}", ha="center", va="center", fontsize=6, color="white")
                left += w
        ax.text(101, i, f"{total * 1e3:,.3g} ms", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), [f"{r['backend']} · {p['config']['parameters'] / 1e3:,.0f} k" for p, r in rows],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 114)
    ax.set_xlabel("% of the step (each call timed on its own, median over profiled steps)")
    handles = [Patch(color=c, label=k) for k, c in KIND_COLORS.items()]
    handles += [Patch(facecolor="white", edgecolor="gray", hatch=h, label=ph) for ph, h in PHASE_HATCH.items()]
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=6)
    ax.set_title(f"Where a GPT training step goes: matmul, attention, the rest\n{_subtitle(doc['env'])}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out_dir, "breakdown_gpt")


def gpt_charts(doc: dict, out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return gpt_loss_chart(doc, out_dir) + gpt_step_time_chart(doc, out_dir) + gpt_breakdown_chart(doc, out_dir)
