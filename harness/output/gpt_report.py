"""The files and tables of `harness train gpt`: train_gpt.json (everything), train_gpt.csv (a
row per plan and backend), train_gpt.md (the tables the README quotes verbatim), and the
terminal report: a table per plan, where each step goes, and the samples side by side."""
from __future__ import annotations

from pathlib import Path

from .. import train as mlp_train
from ..models import gpt

MODEL = "gpt"
CSV_FIELDS = ("plan", "backend", "status", "reason", "layers", "heads", "channels", "context", "batch",
              "parameters", "steps", "step_median_s", "step_p25_s", "step_p75_s", "device_median_s",
              "tokens_per_s", "speedup_vs_python", "speedup_vs_numpy", "speedup_vs_torch", "val_loss",
              "final_loss", "max_loss_err", "loss_tol_used_pct", "worst_gradient_tol_used_pct", "variants")


def document(result: dict, env: dict) -> dict:
    return {"schema": mlp_train.SCHEMA, "schema_version": mlp_train.SCHEMA_VERSION, "model": MODEL, "env": env,
            **result}


def _worst_grad(r):
    g = [x["tol_used_pct"] for x in r["gradients"].values()]
    return max(g) if g else None


def csv_text(doc: dict) -> str:
    import csv
    import io
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    for p in doc["plans"]:
        c = p["config"]
        for r in p["runs"]:
            st, dev = r["step_time"] or {}, r["device_time"] or {}
            w.writerow({"plan": p["name"], "backend": r["backend"], "status": r["status"], "reason": r["reason"],
                        **{k: c[k] for k in ("layers", "heads", "channels", "context", "batch", "parameters")},
                        "steps": r["steps"], "step_median_s": st.get("median_s"), "step_p25_s": st.get("p25_s"),
                        "step_p75_s": st.get("p75_s"), "device_median_s": dev.get("median_s"),
                        "tokens_per_s": r["tokens_per_s"], "speedup_vs_python": r["speedup_vs_python"],
                        "speedup_vs_numpy": r["speedup_vs_numpy"], "speedup_vs_torch": r["speedup_vs_torch"],
                        "val_loss": r["val_loss"], "final_loss": r["losses"][-1] if r["losses"] else None,
                        "max_loss_err": r["agreement"].get("max_loss_err"),
                        "loss_tol_used_pct": r["agreement"].get("tol_used_pct"),
                        "worst_gradient_tol_used_pct": _worst_grad(r),
                        "variants": "; ".join(f"{k}={v}" for k, v in r["variants"].items())})
    return buf.getvalue()


def write(doc: dict, out_dir) -> tuple[Path, Path]:
    from ..core.results import atomic_write_text, to_json
    out_dir = Path(out_dir)
    jpath, cpath = out_dir / "train_gpt.json", out_dir / "train_gpt.csv"
    atomic_write_text(jpath, to_json(doc))
    atomic_write_text(cpath, csv_text(doc))
    atomic_write_text(out_dir / "train_gpt.md", markdown(doc))
    return jpath, cpath


# ----------------------------------------------------------------------------- the breakdown

def breakdown_by(run: dict, key: str) -> dict[str, float]:
    """A run's profiled step summed by 'kind' (attention, matmul, rest), 'phase' or 'primitive'."""
    out: dict[str, float] = {}
    for call, s in run["breakdown"].items():
        info = run["calls"].get(call, {})
        prim = info.get("primitive", "?")
        k = gpt.kind_of(prim) if key == "kind" else info.get("phase", "?") if key == "phase" else prim
        out[k] = out.get(k, 0.0) + s
    return out


def _where(run: dict) -> str:
    from .report import fmt_time
    total = sum(run["breakdown"].values())
    kinds = breakdown_by(run, "kind")
    phases = breakdown_by(run, "phase")
    return (f"{fmt_time(total)} with each call timed alone: "
            + ", ".join(f"{k} {100 * kinds.get(k, 0) / total:.0f} %" for k in ("matmul", "attention", "rest"))
            + "; " + ", ".join(f"{k} {100 * phases.get(k, 0) / total:.0f} %" for k in ("forward", "backward", "update")))


# ----------------------------------------------------------------------------- markdown

def _cfg_line(c: dict) -> str:
    return (f"L={c['layers']}, H={c['heads']}, C={c['channels']}, T={c['context']}, B={c['batch']} "
            f"({c['parameters']:,} parameters)")


def markdown(doc: dict) -> str:
    from .. import train_gpt as tg
    from .report import fmt_time, fmt_x
    env, corpus = doc["env"], doc["corpus"]
    lines = [f"Machine: **{env.get('machine')}** — {env.get('cpu_model')}, {env.get('cpu_cores')} cores"
             + (f", {env['gpu']}" if env.get("gpu") else "")
             + f"; {env.get('time_utc', '')[:10]}, commit {env.get('git_commit')}.", "",
             f"Character-level GPT-2 on {corpus['file']} ({corpus['characters']:,} characters, {corpus['vocab']} "
             f"distinct; the last 10 % held out). The unigram baseline (each character predicted by its training "
             f"frequency) is **{corpus['unigram_baseline']:.3f} nats** per character on the held-out text. Step time: "
             f"median after {tg.AGREE_STEPS} judged steps and {tg.WARMUP_STEPS} of warm-up; agreement: the worst of steps "
             f"1-{doc['agreement']['steps']} against float64, as % of {doc['agreement']['loss_rtol']:g} (1 + |loss|); "
             f"gradients: the worst parameter tensor at step 1, as % of its tolerance.", ""]
    for p in doc["plans"]:
        c = p["config"]
        lines += [f"**{_cfg_line(c)}**, {p['steps']} steps, AdamW lr {c['lr']:g}"
                  + (f" — {p['note']}" if p["note"] else "") + ":", "",
                  "| backend | step | IQR | tokens/s | × Python | × NumPy | × PyTorch | val loss | agreement | gradients |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in p["runs"]:
            if r["status"] != "pass":
                lines.append(f"| {r['backend']} | {r['status']}: {r['reason']} | | | | | | | | |")
                continue
            st = r["step_time"]
            g = _worst_grad(r)
            lines.append(f"| {r['backend']} | {fmt_time(st['median_s']) if st else '—'} | "
                         f"{fmt_time(st['p75_s'] - st['p25_s']) if st else '—'} | "
                         f"{r['tokens_per_s']:,.0f} | {fmt_x(r['speedup_vs_python'])} | {fmt_x(r['speedup_vs_numpy'])} | "
                         f"{fmt_x(r['speedup_vs_torch'])} | {r['val_loss']:.3f} | "
                         f"{r['agreement']['tol_used_pct']:.2g} % | {g:.2g} % |" if st else
                         f"| {r['backend']} | — | — | — | | | | {r['val_loss']:.3f} | | |")
        lines.append("")
        for r in p["runs"]:
            if r["status"] == "pass" and r["breakdown"]:
                lines.append(f"- **{r['backend']}**, where a step goes: {_where(r)}")
        lines.append("")
    main = doc["plans"][0]
    samples = [(r["backend"], r["sample"]) for r in main["runs"] if r.get("sample")]
    if samples:
        s = doc["sampling"]
        lines += [f"Samples after {main['steps']} steps ({_cfg_line(main['config'])}), prompt {s['prompt']!r}, "
                  f"temperature {s['temperature']}, the same seeded draws on every backend:", ""]
        for name, text_ in samples:
            lines += [f"{name}:", "", "```text", text_.rstrip("\n"), "```", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------- the terminal

def report(doc: dict, console) -> None:
    from rich.columns import Columns
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    from .report import fmt_time, fmt_x
    corpus = doc["corpus"]
    for p in doc["plans"]:
        c = p["config"]
        t = Table(title=f"train gpt {_cfg_line(c)}, {p['steps']} steps, on {corpus['file']}",
                  title_justify="left", caption_justify="left",
                  caption=(f"unigram baseline {corpus['unigram_baseline']:.3f} nats/char; agreement: worst |loss - "
                           f"loss64| over steps 1-{doc['agreement']['steps']} as % of tolerance; gradients: worst "
                           f"tensor at step 1" + (f"\n{p['note']}" if p["note"] else "")))
        for col in ("backend", "step", "tokens/s", "× py", "× np", "× torch", "val loss", "agree", "grads", "status"):
            t.add_column(col, justify="left" if col in ("backend", "status") else "right")
        for r in p["runs"]:
            st = r["step_time"]
            status = {"pass": "[green]pass[/]", "fail": "[bold red]fail[/]", "error": "[bold red]error[/]",
                      "skip": "[yellow]skip[/]"}[r["status"]]
            if r["reason"]:
                status += f" [dim]{escape(r['reason'][:100])}[/]"
            g = _worst_grad(r)
            a = r["agreement"].get("tol_used_pct")
            t.add_row(r["backend"], fmt_time(st["median_s"]) if st else "—",
                      f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "—",
                      fmt_x(r["speedup_vs_python"]), fmt_x(r["speedup_vs_numpy"]), fmt_x(r["speedup_vs_torch"]),
                      f"{r['val_loss']:.3f}" if r["val_loss"] is not None else "—",
                      f"{a:.2g}%" if a is not None else "—", f"{g:.2g}%" if g is not None else "—", status)
        console.print(t)
        for r in p["runs"]:
            if r["status"] == "pass" and r["breakdown"]:
                console.print(f"  {r['backend']}: {_where(r)}", highlight=False)
    main = doc["plans"][0]
    panels = [Panel(escape(r["sample"]), title=r["backend"], width=44) for r in main["runs"] if r.get("sample")]
    if panels:
        s = doc["sampling"]
        console.print(f"\nsamples ({_cfg_line(main['config'])}, prompt {s['prompt']!r}, temperature "
                      f"{s['temperature']}, the same seeded draws on every backend):", highlight=False)
        console.print(Columns(panels))
