"""The report's pages: the index, one page per primitive, one per training run, and the
comparison of machines. Every primitive, variant, step and training run comes from the
catalogue, the implementation files and the results; nothing here names one."""
from __future__ import annotations

from ..core import catalogue, distributions
from ..output import compare, sources
from ..output.report import fmt_num, fmt_pct, fmt_time, fmt_x
from ..output.summary import pretty_shape
from .data import LANGUAGES, Machine, check_summary, headline, throughput
from .html import anchor, code, esc, inline_svg, page, table

TITLES = {b: t for b, _, _, t, _ in sources.LANGUAGES}
LEXERS = {b: lx for b, _, _, _, lx in sources.LANGUAGES}
BASELINES = ("numpy", "torch-cpu", "cupy", "torch")
FOOTER_MARK = "Written by <code>python -m harness report</code>"     # in every page (html.page)


def primitive_file(name: str) -> str:
    return f"{name}.html"


def training_file(model: str) -> str:
    return f"train-{model}.html"


def _status(r: dict) -> str:
    s = r["status"]
    text = esc(s) + (f' <span class="muted">{esc(r["reason"])}</span>' if s != "pass" and r.get("reason") else "")
    marks = [f for f in r.get("flags") or []]
    if marks:
        text += f' <span class="muted">({esc(", ".join(marks))})</span>'
    return f'<span class="{esc(s)}">{text}</span>'


def _env_line(m: Machine) -> str:
    e = m.env
    parts = [f"{e.get('cpu_model')}, {e.get('cpu_cores')} cores"]
    if e.get("gpu"):
        parts.append(f"{e['gpu']} (compute {e.get('gpu_compute_capability')}, driver {e.get('nvidia_driver')})")
    parts.append(f"Python {e.get('python')}, NumPy {e.get('numpy')} ({e.get('blas')})")
    if e.get("mojo"):
        parts.append(str(e["mojo"]))
    if e.get("torch"):
        parts.append(f"torch {e['torch']}")
    parts.append(f"{(e.get('time_utc') or '')[:10]}, commit {e.get('git_commit')}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------- index
def index(machines: list[Machine], prims: list[str], compare_ok: list[Machine], compare_note: str) -> str:
    body = ['<h1>Kernel Rosetta</h1>',
            '<p class="lead">The same neural-network primitives in plain Python, CUDA and Mojo, each a '
            'ladder of variants from naive to fast, verified against float64 and timed on the machines '
            'below. Open a primitive to read the three languages side by side, step by step, with what '
            'each step bought.</p>']
    rows = [[f"<span class=nw>{esc(m.name)}</span>", esc(_env_line(m)), f"v{m.schema_version}",
             f"<span class=nw>results/{esc(m.folder.name)}</span>"] for m in machines]
    body += ["<h2 id=machines>Machines</h2>", table(["machine", "environment", "schema", "folder"], rows, numeric_from=9)]
    for m in machines:
        pk = (m.doc.get("peaks") or {})
        bits = []
        for dev, p in pk.items():
            if p and p.get("gflops"):
                bits.append(f"{dev}: {p['gflops']:,.0f} GFLOP/s ({esc(p.get('gflops_source'))})")
            if p and p.get("gbps"):
                bits.append(f"{dev}: {p['gbps']:,.1f} GB/s ({esc(p.get('gbps_source'))})")
        if bits:
            body.append(f"<p><b>{esc(m.name)}</b> measured peaks: " + "; ".join(bits) + ".</p>")

    body.append("<h2 id=primitives>Primitives</h2>")
    body.append('<p class="muted">Per language, the best variant at the largest size NumPy was timed at: '
                'its throughput, × NumPy there, % of the machine\'s measured peak, and × pure Python at the '
                'largest size Python was timed at.</p>')
    rows = []
    for name in prims:
        prim = catalogue.PRIMITIVES.get(name)
        kind = f"backward of {prim.forward}" if prim and prim.forward else "forward"
        ran = [m for m in machines if any(r["primitive"] == name for r in m.rows)]     # not older runs without it
        for i, m in enumerate(ran):
            cells = [f'<a href="{primitive_file(name)}">{esc(name)}</a><br><span class=muted>{esc(kind)}</span>'
                     if i == 0 else "", f"<span class=nw>{esc(m.name)}</span>"]
            for lang in LANGUAGES:
                h = headline(m, name, lang)
                if h is None:
                    why = m.unavailable(lang)
                    cells.append(f'<span class="muted">{esc("not run: " + why if why else "—")}</span>')
                    continue
                cells.append(f'<a href="{primitive_file(name)}#{anchor(lang, h["variant"])}">{esc(h["variant"])}</a>'
                             f' {fmt_num(h["throughput"], 3)} {h["unit"]} at {esc(pretty_shape(h["shape"]))}<br>'
                             f'{fmt_x(h["vs_numpy"])} NumPy · {fmt_pct(h["pct_of_peak"])} of peak'
                             + (f' · {fmt_x(h["vs_python"])} Python' if h["vs_python"] and lang != "python" else ""))
            rows.append(cells)
    body.append(table(["primitive", "machine", "Python", "CUDA", "Mojo"], rows, numeric_from=9))

    trainings = sorted({t for m in machines for t in m.trainings})
    if trainings:
        body.append("<h2 id=training>Training</h2>")
        rows = []
        for t in trainings:
            for m in machines:
                doc = m.trainings.get(t)
                if not doc:
                    continue
                runs = doc["plans"][0]["runs"] if doc.get("model") == "gpt" else doc["runs"]
                ok = [r for r in runs if r["status"] == "pass" and r.get("step_time")]
                best = min(ok, key=lambda r: r["step_time"]["median_s"]) if ok else None
                if doc.get("model") == "gpt":
                    vals = [r["val_loss"] for r in ok if r.get("val_loss") is not None]
                    quality = (f"validation loss {min(vals):.3f} nats/char against the unigram "
                               f"{doc['corpus']['unigram_baseline']:.3f}" if vals else "—")
                else:
                    quality = f"float64 test accuracy {100 * doc['reference']['test_accuracy']:.1f} %"
                rows.append([f'<a href="{training_file(t)}">{esc(t)}</a>', esc(m.name),
                             ", ".join(f"{esc(r['backend'])} {fmt_time(r['step_time']['median_s'])}" for r in ok),
                             f"{esc(best['backend'])} ({fmt_x(best.get('speedup_vs_numpy'))} NumPy)" if best else "—",
                             esc(quality)])
        body.append(table(["model", "machine", "step time per backend", "fastest", "how well it learned"],
                          rows, numeric_from=9))
    body.append("<h2 id=roofline>Roofline</h2>")
    charts = [inline_svg(m.chart("roofline"), anchor("roof", m.name), f"roofline on {m.name}")
              for m in machines if m.chart("roofline")]
    body.append('<div class="charts">' + "".join(charts) + "</div>" if charts else
                '<p class="muted">No roofline chart in these results.</p>')
    body.append("<h2 id=compare>Machines compared</h2>")
    body.append(f'<p><a href="compare.html">The comparison page</a>: {esc(compare_note)}</p>' if len(compare_ok) >= 2
                else f'<p class="muted">{esc(compare_note)}</p>')
    nav = [("machines", "#machines"), ("primitives", "#primitives")] + \
          ([("training", "#training")] if trainings else []) + [("roofline", "#roofline"), ("compare", "#compare")]
    return page("Report", "\n".join(body), nav)


# ---------------------------------------------------------------------------- primitives
def _contract(prim) -> str:
    rows = [[esc(t.name), esc("(" + ", ".join(map(str, t.shape)) + ")"), esc(t.dtype), esc(t.role)]
            for t in prim.tensors]
    out = ["<h2 id=contract>The contract</h2>", f"<p>{esc(prim.summary)}.</p>",
           table(["tensor", "shape", "dtype", "role"], rows, numeric_from=9)]
    if prim.scalars:
        out.append("<p>Scalars: " + ", ".join(f"<code>{esc(s.name)}</code> ({esc(s.dtype)}, default "
                                              f"{esc(s.default)})" for s in prim.scalars) + ".</p>")
    # tolerances at the largest check size: each output's rule and what its error scale is
    dims = max(prim.check_dims, key=lambda d: sum(d)) if prim.check_dims else None
    tol_rows = []
    for t in prim.outputs:
        if t.dtype != "float32":
            tol_rows.append([esc(t.name), "exact (integer)", ""])
            continue
        tol = t.tolerance(dict(zip(prim.dims, dims))) if callable(t.tolerance) else t.tolerance
        scale = (t.error_scale.__doc__ or t.error_scale.__name__).strip().splitlines()[0] if t.error_scale else "|ref|"
        tol_rows.append([esc(t.name), f"atol {tol.atol:.2g}, rtol {tol.rtol:.2g}", esc(scale)])
    out.append(f"<h3 id=tolerance>Tolerance</h3><p>An element passes when |got − ref| ≤ atol + rtol · scale, "
               f"ref being the float64 reference. Shown at the check size "
               f"{esc('x'.join(map(str, dims)) if dims else '—')}; rtol grows like √n for sums of n terms, "
               f"the random-walk rule of float32 rounding.</p>")
    out.append(table(["output", "tolerance", "error scale"], tol_rows, numeric_from=9))
    docs = _distribution_docs()
    drows = [[esc(d), "stress" if d in prim.stress else "regular", esc(docs.get(d, ""))]
             for d in tuple(prim.distributions) + tuple(prim.stress)]
    out.append("<h3 id=distributions>Distributions</h3><p>Every variant is checked on each of these at the odd "
               "check sizes, then verified before and after timing. Stress inputs are where float32 idioms lose "
               "the answer: this project's variants must pass them; the baselines are measured on them.</p>")
    out.append(table(["distribution", "kind", "why"], drows, numeric_from=9))
    if prim.mutants:
        out.append("<h3 id=mutants>Near misses that must fail</h3><ul class=tight>"
                   + "".join(f"<li><code>{esc(mu.name)}</code>: {esc(mu.what)}</li>" for mu in prim.mutants) + "</ul>")
    return "\n".join(out)


def _distribution_docs() -> dict[str, str]:
    """Each distribution's paragraph from the distributions module's docstring."""
    docs, current = {}, None
    for line in (distributions.__doc__ or "").splitlines():
        parts = line.strip().split(None, 1)
        if line.startswith("  ") and not line.startswith("   ") and parts and parts[0] in distributions.GENERATORS:
            current = parts[0]
            docs[current] = parts[1] if len(parts) > 1 else ""
        elif current and line.startswith("     ") and line.strip():
            docs[current] += " " + line.strip()
        else:
            current = None
    return docs


def _results_rows(prim_name: str, items: list[tuple[str, str]], machines: list[Machine]) -> str:
    """One row per (language, variant) x machine x timed size, then each one's checks."""
    rows, notes = [], []
    for lang, v in items:
        for m in machines:
            if m.unavailable(lang):
                notes.append(f"<li>{esc(lang)}/{esc(v)} on {esc(m.name)}: not run — {esc(m.unavailable(lang))}</li>")
                continue
            bound = m.bound(prim_name)
            unit = "GFLOP/s" if bound == "compute" else "GB/s"
            timed = sorted([r for r in m.rows_of(prim_name, lang, v) if r["phase"] == "timed"],
                           key=lambda r: r["size"] or 0)
            for r in timed:
                iqr = (r["p75_s"] - r["p25_s"]) if r.get("median_s") else None
                thr = throughput(r, bound)
                label = f"{esc(lang)}/{esc(v)}" if v != lang else esc(lang)
                rows.append([f'<a href="#{anchor(lang, v)}">{label}</a>' if lang in LANGUAGES else label,
                             f"<span class=nw>{esc(m.name)}</span>", esc(pretty_shape(r["shape"] or "")),
                             fmt_time(r.get("median_s")), fmt_time(iqr) if iqr is not None else "—",
                             f"{fmt_num(thr, 4)} {unit}" if thr else "—", fmt_pct(r.get("pct_of_peak")),
                             fmt_x(r.get("speedup_vs_python")), fmt_x(r.get("speedup_vs_numpy")),
                             fmt_num(r.get("max_abs_err"), 2), fmt_pct(r.get("tol_used_pct")), _status(r)])
            c = check_summary(m, prim_name, lang, v)
            if c["n"]:
                line = (f"{esc(lang)}/{esc(v)} on {esc(m.name)}: {c['passed']}/{c['n']} checks pass "
                        f"({len(c['distributions'])} distributions at the odd sizes"
                        + (f"; worst {fmt_pct(c['worst_pct'])} of tolerance)" if c["worst_pct"] is not None else ")"))
                for r in c["bad"][:3]:
                    line += f'<br><span class="{esc(r["status"])}">{esc(r["status"])}</span> {esc(r["shape"])} ' \
                            f'{esc(r["distribution"])}: {esc(r.get("reason"))}'
                for r in c["skipped"][:2]:
                    line += f'<br><span class="skip">skip</span> {esc(r["shape"])}: {esc(r.get("reason"))}'
                notes.append(f"<li>{line}</li>")
            elif not timed:
                notes.append(f"<li>{esc(lang)}/{esc(v)} on {esc(m.name)}: no results in this run</li>")
    out = ""
    if rows:
        out += table(["variant", "machine", "size", "median", "IQR", "throughput", "% of peak", "× Python",
                      "× NumPy", "max error", "% of tol", "status"], rows, numeric_from=3)
    if notes:
        out += "<ul class=tight>" + "".join(notes) + "</ul>"
    return out


def _cell(lang: str, piece: sources.Piece | None, path_rel: str, what: str) -> str:
    if piece is None:
        return f'<div class="lang empty"><h4>{TITLES[lang]}</h4>{esc(what)}</div>'
    return (f'<div class="lang" id="{anchor(lang, piece.variant)}"><h4>{TITLES[lang]} · '
            f'<code>{esc(piece.variant)}</code> <span class="muted">{esc(path_rel)}:{piece.line}</span></h4>'
            f'<p class="note">{esc(piece.note)}</p>{code(piece.code, LEXERS[lang])}</div>')


def primitive(prim_name: str, machines: list[Machine]) -> str:
    from .. import backends
    prim = catalogue.PRIMITIVES[prim_name]
    pieces, files, heads = {}, {}, {}
    for lang in LANGUAGES:
        path = sources.source_path(lang, prim_name)
        files[lang] = f"{path.parent.name}/{path.name}"
        if path.exists():
            variants = backends.get(lang).variants(prim_name)
            pieces[lang] = {p.variant: p for p in sources.pieces(lang, prim_name, variants)}
            heads[lang] = sources.header(lang, path.read_text(encoding="utf-8"))
        else:
            pieces[lang], heads[lang] = {}, None
    related = [p for p in catalogue.PRIMITIVES.values() if p.forward == prim_name]
    links = []
    if prim.forward:
        links.append(f'the backward of <a href="{primitive_file(prim.forward)}">{esc(prim.forward)}</a>')
    links += [f'its backward: <a href="{primitive_file(p.name)}">{esc(p.name)}</a>' for p in related]
    body = [f"<h1>{esc(prim_name)}</h1>", f'<p class="lead">{esc(prim.summary)}'
            + (" — " + "; ".join(links) if links else "") + "</p>"]
    toc = [("contract", "#contract"), ("lesson", "#lesson"), ("ladder", "#ladder")]
    links = [f'<a href="{h}">{esc(t)}</a>' for t, h in toc]
    links += [f'<a href="#{anchor("step", st.idea)}">step: {esc(st.idea)}</a>' for st in prim.steps]
    links += ['<a href="#baselines">baselines</a>', '<a href="#charts">charts</a>']
    body.append('<nav class="toc">' + " ".join(links) + "</nav>")
    body.append(_contract(prim))

    body.append("<h2 id=lesson>The lesson: each file's header</h2><div class=cols>")
    for lang in LANGUAGES:
        if heads[lang] is None:
            body.append(f'<div class="lang empty"><h4>{TITLES[lang]}</h4>{esc(files[lang])} is not written yet.</div>')
        else:
            body.append(f'<div class="lang"><h4>{TITLES[lang]} · <span class=muted>{esc(files[lang])}</span></h4>'
                        f'<pre class="header">{esc(heads[lang])}</pre></div>')
    body.append("</div>")

    body.append("<h2 id=ladder>The ladder, step by step</h2>")
    if prim.steps:
        body.append("<p>Steps that the languages share are aligned: the same idea, in each language that "
                    "takes it, side by side; below each, what it bought on every machine. " +
                    "; ".join(f"<b>{esc(st.idea)}</b> is " + ", ".join(f"{TITLES[l]} <code>{esc(v)}</code>"
                                                                   for l, v in st.variants().items())
                              for st in prim.steps) + ".</p>")
    else:
        body.append('<p class="muted">This primitive declares no shared steps, so each language\'s ladder is '
                    'shown in its own order below.</p>')
    placed = {lang: set() for lang in LANGUAGES}
    for st in prim.steps:
        sv = st.variants()
        body.append(f'<section class="step" id="{anchor("step", st.idea)}"><h3><a class="self" '
                    f'href="#{anchor("step", st.idea)}">Step: {esc(st.idea)}</a></h3><p>{esc(st.what)}</p><div class=cols>')
        for lang in LANGUAGES:
            v = sv.get(lang)
            piece = pieces[lang].get(v) if v else None
            if piece:
                placed[lang].add(v)
            body.append(_cell(lang, piece, files[lang], f"No {TITLES[lang]} variant takes this step."))
        body.append("</div>" + _results_rows(prim_name, [(l, v) for l, v in sv.items() if v in pieces[l]],
                                             machines) + "</section>")
    rest = {lang: [p for v, p in pieces[lang].items() if v not in placed[lang]] for lang in LANGUAGES}
    if any(rest.values()):
        title = "The other steps, in each language's own order" if prim.steps else "Each language's ladder"
        body.append(f'<section class="step" id="other-steps"><h3>{title}</h3><div class=cols>')
        for lang in LANGUAGES:
            if rest[lang]:
                body.append("<div>" + "".join(_cell(lang, p, files[lang], "") for p in rest[lang]) + "</div>")
            else:
                body.append(f'<div class="lang empty"><h4>{TITLES[lang]}</h4>'
                            + ("Every variant is in a step above." if pieces[lang] else "No implementation yet.")
                            + "</div>")
        body.append("</div>" + _results_rows(prim_name, [(l, p.variant) for l in LANGUAGES for p in rest[l]],
                                             machines) + "</section>")

    body.append("<h2 id=baselines>Baselines</h2><p>The libraries a user would otherwise call, on the same "
                "inputs; measured, and not held to the stress inputs.</p>")
    base = [(b, v) for b in BASELINES for v in dict.fromkeys(r["variant"] for m in machines for r in m.rows
                                                              if r["primitive"] == prim_name and r["backend"] == b
                                                              and r["variant"])]
    body.append(_results_rows(prim_name, base, machines) if base else '<p class="muted">None ran.</p>')

    body.append("<h2 id=charts>Charts</h2>")
    charts = []
    for m in machines:
        for stem, what in ((f"throughput_{prim_name}", "throughput against size"),
                           (f"speedup_{prim_name}", "speedups")):
            if m.chart(stem):
                charts.append(inline_svg(m.chart(stem), anchor(stem, m.name), f"{prim_name}: {what} on {m.name}"))
    body.append('<div class="charts">' + "".join(charts) + "</div>" if charts
                else '<p class="muted">No charts for this primitive in these results.</p>')
    return page(prim_name, "\n".join(body), [("index", "index.html")])


# ----------------------------------------------------------------------------- training
def training(model: str, machines: list[Machine]) -> str:
    if any((m.trainings.get(model) or {}).get("model") == "gpt" for m in machines):
        return training_gpt(model, machines)
    body = [f"<h1>Training: {esc(model)}</h1>"]
    for m in machines:
        doc = m.trainings.get(model)
        if not doc:
            continue
        cfg, ref = doc["config"], doc["reference"]
        body.append(f'<h2 id="{anchor(m.name)}">{esc(m.name)}</h2><p class=muted>{esc(_env_line(m))}</p>')
        body.append("<p>" + esc(", ".join(f"{k} {v}" for k, v in cfg.items())) + f". Agreement rule: "
                    f"{esc(doc['agreement']['rule'])}.</p>")
        rows = [["float64 reference", "—", "—", "—", "—", "—", f"{ref['train_loss']:.4f}",
                 f"{100 * ref['test_accuracy']:.1f} %", "—", "—", "reference"]]
        for r in doc["runs"]:
            st = r.get("step_time")
            grads = [g["tol_used_pct"] for g in (r.get("gradients") or {}).values()]
            a = r.get("agreement") or {}
            rows.append([esc(r["backend"]) + (f" ({r['steps']} steps)" if r.get("steps") and r["steps"] < cfg["steps"] else ""),
                         fmt_time(st["median_s"]) if st else "—",
                         fmt_time(st["p75_s"] - st["p25_s"]) if st else "—",
                         f"{r['samples_per_s']:,.0f}" if r.get("samples_per_s") else "—",
                         fmt_x(r.get("speedup_vs_python")), fmt_x(r.get("speedup_vs_numpy")),
                         f"{r['train_loss']:.4f}" if r.get("train_loss") is not None else "—",
                         f"{100 * r['test_accuracy']:.1f} %" if r.get("test_accuracy") is not None else "—",
                         fmt_pct(a.get("tol_used_pct")), fmt_pct(max(grads)) if grads else "—", _status(r)])
        body.append(table(["backend", "step", "IQR", "samples/s", "× Python", "× NumPy", "train loss",
                           "test accuracy", "agreement", "gradients", "status"], rows, numeric_from=1))
        body += [_gradients(r) for r in doc["runs"] if r.get("gradients")]
        charts = []
        for stem, what in ((f"loss_{model}", "loss curves, with the float64 curve"),
                           (f"step_time_{model}", "step time per backend"),
                           (f"breakdown_{model}", "where a step goes, by primitive")):
            if m.chart(stem):
                charts.append(inline_svg(m.chart(stem), anchor(stem, m.name), f"{model}: {what} on {m.name}"))
        body.append('<div class="charts">' + "".join(charts) + "</div>")
        samples = [(r["backend"], r["samples"]) for r in doc["runs"] if r.get("samples")]
        if samples:
            body.append("<h3>Samples</h3><div class=cols>" + "".join(
                f'<div class="lang"><h4>{esc(b)}</h4><pre class="sample">{esc(s)}</pre></div>' for b, s in samples)
                + "</div>")
    return page(f"train {model}", "\n".join(body), [("index", "index.html")])


def _gradients(run: dict) -> str:
    rows = [[esc(n), fmt_num(g.get("max_abs_err"), 2), fmt_pct(g["tol_used_pct"])] for n, g in run["gradients"].items()]
    return (f"<details><summary>{esc(run['backend'])}: step-1 gradients, tensor by tensor</summary>"
            + table(["tensor", "max error", "% of tolerance"], rows) + "</details>")


def training_gpt(model: str, machines: list[Machine]) -> str:
    """train_gpt.json: a table per plan (configuration), the step-1 gradients, the charts, and
    the samples side by side."""
    body = [f"<h1>Training: {esc(model)}</h1>"]
    for m in machines:
        doc = m.trainings.get(model)
        if not doc:
            continue
        corpus = doc["corpus"]
        body.append(f'<h2 id="{anchor(m.name)}">{esc(m.name)}</h2><p class=muted>{esc(_env_line(m))}</p>')
        body.append(f"<p>Character-level GPT-2 on {esc(corpus['file'])}: {corpus['characters']:,} characters, "
                    f"{corpus['vocab']} distinct, the last 10 % held out. Unigram baseline: "
                    f"{corpus['unigram_baseline']:.3f} nats per character. Agreement rule: "
                    f"{esc(doc['agreement']['rule'])}.</p>")
        for p in doc["plans"]:
            c = p["config"]
            body.append(f"<h3>L={c['layers']}, H={c['heads']}, C={c['channels']}, T={c['context']}, B={c['batch']}: "
                        f"{c['parameters']:,} parameters, {p['steps']} steps</h3>"
                        + (f"<p class=muted>{esc(p['note'])}</p>" if p.get("note") else ""))
            rows = []
            for r in p["runs"]:
                st = r.get("step_time")
                grads = [g["tol_used_pct"] for g in (r.get("gradients") or {}).values()]
                a = r.get("agreement") or {}
                rows.append([esc(r["backend"]), fmt_time(st["median_s"]) if st else "—",
                             fmt_time(st["p75_s"] - st["p25_s"]) if st else "—",
                             f"{r['tokens_per_s']:,.0f}" if r.get("tokens_per_s") else "—",
                             fmt_x(r.get("speedup_vs_python")), fmt_x(r.get("speedup_vs_numpy")),
                             fmt_x(r.get("speedup_vs_torch")),
                             f"{r['val_loss']:.3f}" if r.get("val_loss") is not None else "—",
                             fmt_pct(a.get("tol_used_pct")), fmt_pct(max(grads)) if grads else "—", _status(r)])
            body.append(table(["backend", "step", "IQR", "tokens/s", "× Python", "× NumPy", "× PyTorch", "val loss",
                               "agreement", "gradients", "status"], rows, numeric_from=1))
            body += [_gradients(r) for r in p["runs"] if r.get("gradients")]
        charts = []
        for stem, what in ((f"loss_{model}", "loss curves and the unigram baseline"),
                           (f"step_time_{model}", "step time per backend and configuration"),
                           (f"breakdown_{model}", "where a step goes: matmul, attention, the rest")):
            if m.chart(stem):
                charts.append(inline_svg(m.chart(stem), anchor(stem, m.name), f"{model}: {what} on {m.name}"))
        body.append('<div class="charts">' + "".join(charts) + "</div>")
        samples = [(r["backend"], r["sample"]) for r in doc["plans"][0]["runs"] if r.get("sample")]
        if samples:
            s = doc["sampling"]
            body.append(f"<h3>Samples</h3><p class=muted>prompt {esc(repr(s['prompt']))}, temperature "
                        f"{s['temperature']}, the same seeded draws on every backend</p><div class=cols>" + "".join(
                            f'<div class="lang"><h4>{esc(b)}</h4><pre class="sample">{esc(t)}</pre></div>'
                            for b, t in samples) + "</div>")
    return page(f"train {model}", "\n".join(body), [("index", "index.html")])


# ------------------------------------------------------------------------------ compare
def comparison(machines: list[Machine]) -> str:
    base = machines[0]
    body = ["<h1>Machines compared</h1>",
            f"<p>Every case timed and verified on both machines (one primitive, backend, variant, size and "
            f"dtype), against <b>{esc(base.name)}</b>: the ratio is {esc(base.name)}'s median over the other's "
            f"(above 1: the other machine is faster).</p>"]
    for other in machines[1:]:
        body.append(f'<h2 id="{anchor("vs", other.name)}">{esc(base.name)} and {esc(other.name)}</h2>')
        diff = compare.env_diff(base.doc, other.doc)
        body.append("<h3>Environment fields that differ</h3>" + table(
            ["field", esc(base.name), esc(other.name)], [[esc(f), esc(a), esc(b)] for f, a, b in diff], numeric_from=9))
        rows = [[f'<a href="{primitive_file(p)}">{esc(p)}</a>', esc(f"{b}/{v}"), esc(shape),
                 fmt_time(ra["median_s"]), fmt_time(rb["median_s"]), f"{ra['median_s'] / rb['median_s']:.3g}"]
                for (p, b, v, shape, _), ra, rb in compare.cases(base.doc, other.doc)]
        body.append(table(["primitive", "backend/variant", "size", esc(base.name), esc(other.name), "ratio"],
                          rows, numeric_from=2))
    return page("compare", "\n".join(body), [("index", "index.html")])
