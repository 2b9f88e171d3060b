"""python -m harness  list | doctor | run | train | show | report | compare | plot | build | calibrate

Exit status: 0 = everything that ran verified; 1 = some result was wrong (or crashed);
2 = bad usage (unknown primitive/backend, bad size, unwritable directory), always
reported as one line.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import backends
from .core import catalogue
from .env import REPO, fingerprint, machine_name
from .errors import InputError, UsageError

WIDE = 160          # tables are wide; when the output is a file or pipe, do not squeeze them to 80

console = Console()
err_console = Console(stderr=True)


def _make_consoles() -> None:
    global console, err_console
    console = Console(width=None if sys.stdout.isatty() else WIDE)
    err_console = Console(stderr=True)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2."""

    def error(self, message):
        raise UsageError(f"{message} (see `python -m harness {self.prog.split()[-1]} --help`)"
                         if " " in self.prog else f"{message} (see `python -m harness --help`)")


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_primitives(values) -> list[str]:
    names = [n for v in values for n in _csv_list(v)] if values else list(catalogue.PRIMITIVES)
    for n in names:
        catalogue.get(n)
    return list(dict.fromkeys(names))


def parse_backends(values) -> list[str]:
    names = [n for v in values for n in _csv_list(v)] if values else backends.names()
    for n in names:
        if n not in backends.REGISTRY:
            raise UsageError(f"unknown backend {n!r}; valid: {', '.join(backends.names())}")
    return list(dict.fromkeys(names))


def parse_sizes(text: str | None) -> list[int] | None:
    if text is None:
        return None
    sizes = []
    for t in _csv_list(text):
        try:
            v = int(t)
        except ValueError:
            raise UsageError(f"bad size {t!r}: sizes are positive integers, e.g. --sizes 128,1024") from None
        if v <= 0:
            raise UsageError(f"bad size {v}: sizes must be positive")
        sizes.append(v)
    if not sizes:
        raise UsageError("--sizes is empty: give positive integers, e.g. --sizes 128,1024")
    return sizes


def writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to {path}: {e.strerror or e}") from None
    return path


# ------------------------------------------------------------------------------ verbs

def cmd_list(args) -> int:
    t = Table(title="primitives", title_justify="left")
    for c in ("primitive", "what", "tensors", "scalars", "distributions", "ladder"):
        t.add_column(c)
    for p in catalogue.PRIMITIVES.values():
        tensors = "\n".join(f"{tn.role} {tn.name}({', '.join(map(str, tn.shape))})"
                             + ("" if tn.dtype == "float32" else f" {tn.dtype}") for tn in p.tensors)
        scalars = "\n".join(f"{sc.name}: {sc.dtype} = {sc.default:g}" for sc in p.scalars) or "—"
        dists = ", ".join(p.distributions) + (f"\nstress: {', '.join(p.stress)}" if p.stress else "")
        what = p.summary + (f"\n[dim]{escape(p.flops_note)}[/]" if p.flops_note else "")
        t.add_row(p.name, what, escape(tensors), scalars, dists,
                  f"{p.ladder[0]} … {p.ladder[-1]} ({len(p.ladder)} sizes)")
    console.print(t)
    bs = backends.all_backends()
    t = Table(title="variants per backend (naive first)", title_justify="left")
    t.add_column("primitive")
    for b in bs:
        t.add_column(b.name)
    for p in catalogue.PRIMITIVES:
        t.add_row(p, *(escape("\n".join(_variants_safe(b, p))) or "—" for b in bs))
    console.print(t)
    for b in bs:
        a = b.availability()
        console.print(f"  {b.name}: " + ("[green]available[/]" if a.ok else f"[yellow]unavailable[/]: {escape(a.reason)}"),
                      highlight=False)
    console.print("[dim]— : no implementation yet[/]")
    return 0


def _variants_safe(b, primitive):
    try:
        return b.variants(primitive)
    except Exception as e:
        return [f"(error: {e})"]


def cmd_doctor(args) -> int:
    t = Table(title="backends", title_justify="left")
    for c in ("backend", "available", "details / reason", "to fix"):
        t.add_column(c)
    for b in backends.all_backends():
        a = b.availability()
        t.add_row(b.name, "[green]yes[/]" if a.ok else "[red]no[/]", escape(a.detail if a.ok else a.reason),
                  "" if a.ok else escape(a.hint))
    console.print(t)
    env = fingerprint()
    console.print(f"machine: {env['machine']} — {env['cpu_model']}, {env['cpu_cores']} cores, "
                  f"Python {env['python']}, NumPy {env['numpy']} ({env['blas']})", highlight=False)
    return 0


def cmd_show(args) -> int:
    from .output.show import show
    if args.variant and args.step:
        raise UsageError("give --variant or --step, not both")
    show(args.primitive, console, results_path=args.results, variant=args.variant, step=args.step)
    return 0


def cmd_report(args) -> int:
    from . import site
    folders = [Path(f) for f in args.folders] if args.folders else site.default_folders()
    out = writable_dir(Path(args.out) if args.out else REPO / "results" / "report")
    t0 = time.perf_counter()
    pages = site.build(folders, out)
    console.print(f"wrote {len(pages)} pages from {len(folders)} results folders to {_rel(out)} in "
                  f"{time.perf_counter() - t0:.1f} s; open {_rel(out / 'index.html')}", highlight=False)
    return 0


def cmd_compare(args) -> int:
    from .core import results
    from .output import compare
    a, b = results.load(args.a), results.load(args.b)
    compare.comparable(a, b, args.a, args.b)
    for t in compare.tables(a, b, args.a, args.b):
        console.print(t)
    return 0


def cmd_plot(args) -> int:
    from .core import results
    from .output import plots
    doc = results.load(args.results)
    out = writable_dir(Path(args.out) if args.out else Path(args.results).parent / "charts")
    paths = plots.all_charts(doc, out)
    console.print(f"wrote {len(paths)} chart files to {out}")
    if args.summary:
        from .output.summary import markdown_summary
        console.print(markdown_summary(doc), markup=False, highlight=False)
    return 0


def cmd_build(args) -> int:
    """Compile every kernel of a compiled backend without running anything (works with no GPU)."""
    from .build import build
    return build(parse_backends(args.backends), arch=args.arch, primitives=parse_primitives(args.primitives),
                 console=console)


def cmd_calibrate(args) -> int:
    from .core.calibrate import calibrate_report
    calibrate_report(parse_primitives(args.primitives), console)
    return 0


GPT_FLAGS = ("layers", "heads", "channels", "context")


def _training_setup(args, names) -> tuple[str, Path, list[str] | None]:
    """The machine's name (its GPU's, where a GPU backend runs), the output folder, and the
    preferred variants of a `train` command."""
    gpus = [backends.get(n).environment().get("gpu") for n in names
            if n in backends.REGISTRY and backends.get(n).device == "gpu" and backends.get(n).availability().ok]
    machine = args.machine or machine_name(next((g for g in gpus if g), None))
    out = writable_dir(Path(args.out) if args.out else REPO / "results" / machine)
    preferred = [v for s_ in (args.variants or []) for v in _csv_list(s_)] or None
    return machine, out, preferred


def _training_env(machine: str, names) -> dict:
    extra = {"machine": machine}
    for n in names:
        if n in backends.REGISTRY and backends.get(n).availability().ok:
            extra.update(backends.get(n).environment())
    return fingerprint(extra)


def cmd_train(args) -> int:
    from . import train as tr
    from .models import mlp
    from .output import train_charts
    if args.model not in ("mlp", "gpt"):
        raise UsageError(f"unknown model {args.model!r}; valid: mlp, gpt")
    if args.model == "gpt":
        return cmd_train_gpt(args)
    given = [f"--{f}" for f in GPT_FLAGS if getattr(args, f) is not None]
    if given:
        raise UsageError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for `train gpt`; the MLP takes --hidden")
    names = parse_backends(args.backends) if args.backends else list(tr.DEFAULT_BACKENDS)
    for n in names:
        if n not in backends.REGISTRY:
            raise UsageError(f"unknown backend {n!r}; valid: {', '.join(backends.names())}")
    for flag, value in (("--steps", args.steps), ("--hidden", args.hidden), ("--batch", args.batch)):
        if value is not None and value <= 0:
            raise UsageError(f"bad {flag} {value}: it must be positive")
    base = mlp.Config()
    cfg = mlp.Config(hidden=args.hidden or base.hidden, batch=args.batch or base.batch,
                     steps=args.steps or base.steps, seed=args.seed)
    machine, out, preferred = _training_setup(args, names)
    result = tr.train(names, cfg, preferred=preferred, progress=RichProgress())
    doc = tr.document(result, _training_env(machine, names))
    jpath, cpath = tr.write(doc, out)
    tr.report(doc, console)
    if not args.no_charts:
        paths = train_charts.all_charts(doc, out / "charts", mlp.PHASE)
        console.print(f"charts: {len(paths)} files in {_rel(out / 'charts')}", highlight=False)
    console.print(f"wrote {_rel(jpath)} and {_rel(cpath)}", highlight=False)
    return tr.exit_status(doc)


def cmd_train_gpt(args) -> int:
    from . import train_gpt as tg
    from .models import gpt
    from .output import gpt_report, train_charts
    if args.hidden is not None:
        raise UsageError("--hidden is for `train mlp`; a GPT takes --layers, --heads, --channels, --context")
    names = parse_backends(args.backends) if args.backends else list(tg.DEFAULT_BACKENDS)
    for n in names:
        if n not in backends.REGISTRY:
            raise UsageError(f"unknown backend {n!r}; valid: {', '.join(backends.names())}")
    flags = {"steps": args.steps, "batch": args.batch, **{f: getattr(args, f) for f in GPT_FLAGS}}
    for flag, value in flags.items():
        if value is not None and value <= 0:
            raise UsageError(f"bad --{flag} {value}: it must be positive")
    from .models import text
    base = gpt.Config()
    try:
        cfg = gpt.Config(**{k: (v if v is not None else getattr(base, k)) for k, v in flags.items()},
                         seed=args.seed, vocab=text.load().vocab)
    except InputError as e:
        raise UsageError(str(e)) from None
    machine, out, preferred = _training_setup(args, names)
    result = tg.train(names, cfg, preferred=preferred, progress=RichProgress())
    doc = gpt_report.document(result, _training_env(machine, names))
    jpath, cpath = gpt_report.write(doc, out)
    gpt_report.report(doc, console)
    if not args.no_charts:
        paths = train_charts.gpt_charts(doc, out / "charts")
        console.print(f"charts: {len(paths)} files in {_rel(out / 'charts')}", highlight=False)
    console.print(f"wrote {_rel(jpath)} and {_rel(cpath)}", highlight=False)
    return tg.exit_status(doc)


class RichProgress:
    """A live bar on a terminal; in a log (CI, `| tee`) a plain line every few seconds."""

    LOG_EVERY_S = 5.0

    def __init__(self):
        self.live = err_console.is_terminal
        self.p = Progress(TextColumn("{task.description}", style="cyan"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=err_console, transient=False)
        self.task = None
        self.done = self.total = 0
        self.last = 0.0

    def start(self, total):
        self.total = total
        if self.live:
            self.p.start()
            self.task = self.p.add_task("starting", total=total)

    def advance(self, description, n: int = 1):
        self.done += n
        if self.live:
            self.p.update(self.task, advance=n, description=description[:60])
            return
        now = time.monotonic()
        if now - self.last >= self.LOG_EVERY_S:
            self.last = now
            err_console.print(f"[{self.done}/{self.total}] {description}", highlight=False, markup=False)

    def stop(self):
        if self.live:
            if self.task is not None:
                self.p.update(self.task, description="done")
            self.p.stop()


def cmd_run(args) -> int:
    from .core import results
    from .core.runner import RunConfig, Runner
    from .core.timing import TimingConfig
    from .output import plots, report
    from .output.summary import markdown_summary

    prims = parse_primitives(args.primitives)
    bnames = parse_backends(args.backends)
    sizes = parse_sizes(args.sizes)
    gpus = [backends.get(n).environment().get("gpu") for n in bnames
            if backends.get(n).device == "gpu" and backends.get(n).availability().ok]
    machine = args.machine or machine_name(next((g for g in gpus if g), None))
    default_out = REPO / "results" / machine / ("quick" if args.quick else "")
    out = writable_dir(Path(args.out) if args.out else default_out)
    cfg = RunConfig(primitives=prims, backends=bnames, quick=args.quick, sizes=sizes,
                    timing=TimingConfig.quick() if args.quick else TimingConfig(),
                    checks=not args.no_checks,
                    variants=[v for s in (args.variants or []) for v in _csv_list(s)] or None)
    log = logging.getLogger("harness").debug
    runner = Runner(cfg, progress=RichProgress(), log=log)
    rows = runner.run()
    extra = {"machine": machine}
    for name in bnames:
        b = backends.get(name)
        if b.availability().ok:
            extra.update(b.environment())
    env = fingerprint(extra)
    doc = results.make_document(env, runner.peaks, cfg.as_dict(), rows, floors=runner.floors,
                                baselines=runner.baselines)
    jpath, cpath = results.write(out, doc)
    results.atomic_write_text(out / "summary.md", markdown_summary(doc))
    report.print_report(rows, env, runner.peaks, console, floors=runner.floors, baselines=runner.baselines,
                        wide=args.wide or None)
    if not args.no_charts:
        paths = plots.all_charts(doc, out / "charts")
        console.print(f"charts: {len(paths)} files in {_rel(out / 'charts')}", highlight=False)
    console.print(f"wrote {_rel(jpath)} and {_rel(cpath)}", highlight=False)
    return runner.exit_status()


def _rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="harness", description="Kernel Rosetta: one primitive, three languages, one harness.")
    ap.add_argument("-v", "--verbose", action="store_true", help="log details (tracebacks of failing cases)")
    sub = ap.add_subparsers(dest="verb", metavar="VERB", parser_class=OneLineParser)
    sub.required = True
    sub.add_parser("list", help="primitives, backends, variants and availability").set_defaults(fn=cmd_list)
    sub.add_parser("doctor", help="each backend: available, or why not and how to fix").set_defaults(fn=cmd_doctor)
    r = sub.add_parser("run", help="verify, time, report, chart")
    r.add_argument("-p", "--primitives", action="append", metavar="PRIMS", help="comma list (default: all)")
    r.add_argument("-b", "--backends", action="append", metavar="BACKENDS", help="comma list (default: all)")
    r.add_argument("--variants", action="append", metavar="NAMES", help="only these variant names")
    r.add_argument("--quick", action="store_true", help="small ladder, short timing: under a minute")
    r.add_argument("-s", "--sizes", metavar="N,N,…", help="ladder sizes to use instead of each primitive's own")
    r.add_argument("--out", metavar="DIR", help="output folder (default: results/<machine>/, quick: …/quick/)")
    r.add_argument("--machine", metavar="NAME", help="machine name for the results folder and charts")
    r.add_argument("--no-checks", action="store_true", help="skip the odd-size/adversarial correctness checks")
    r.add_argument("--no-charts", action="store_true", help="do not draw charts")
    r.add_argument("--wide", action="store_true", help="every column (IQR, errors, %% of tolerance) at any width")
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("show", help="one primitive's implementations side by side")
    s.add_argument("primitive")
    s.add_argument("--results", metavar="RESULTS.json", help="also show each variant's results from this file")
    s.add_argument("--variant", metavar="NAME", help="only this variant, in each language that has it")
    s.add_argument("--step", metavar="IDEA", help="one step of the ladder (e.g. online): its variant in each language")
    s.set_defaults(fn=cmd_show)
    rp = sub.add_parser("report", help="a static site of the results: languages side by side, with their results")
    rp.add_argument("folders", nargs="*", metavar="RESULTS_DIR", help="results folders (default: every results/*/)")
    rp.add_argument("--out", metavar="DIR", help="output folder (default: results/report/)")
    rp.set_defaults(fn=cmd_report)
    cp = sub.add_parser("compare", help="two runs side by side, case by case")
    cp.add_argument("a", metavar="A.json")
    cp.add_argument("b", metavar="B.json")
    cp.set_defaults(fn=cmd_compare)
    pl = sub.add_parser("plot", help="draw the charts again from a results.json")
    pl.add_argument("results", metavar="RESULTS.json")
    pl.add_argument("--out", metavar="DIR", help="chart folder (default: charts/ beside the file)")
    pl.add_argument("--summary", action="store_true", help="also print the markdown summary of the run")
    pl.set_defaults(fn=cmd_plot)
    bu = sub.add_parser("build", help="compile every kernel (no GPU needed); exit 1 on a compile error")
    bu.add_argument("-b", "--backends", action="append", metavar="BACKENDS", required=True,
                    help="compiled backends to build (cuda, mojo)")
    bu.add_argument("-p", "--primitives", action="append", metavar="PRIMS", help="comma list (default: all)")
    bu.add_argument("--arch", metavar="sm_XX", help="CUDA target architecture (default: the GPU's own)")
    bu.set_defaults(fn=cmd_build)
    tr = sub.add_parser("train", help="train a model with every backend, judged against float64")
    tr.add_argument("model", help="mlp (digits) or gpt (characters of Shakespeare)")
    tr.add_argument("-b", "--backends", action="append", metavar="BACKENDS",
                    help="comma list (default: python, numpy, mojo, cuda, torch-cpu)")
    tr.add_argument("--steps", type=int, metavar="N",
                    help="training steps (default: mlp 400, gpt 1500; pure Python runs 45)")
    tr.add_argument("--hidden", type=int, metavar="H", help="mlp: hidden units (default 256)")
    tr.add_argument("--batch", type=int, metavar="B", help="batch size (default: mlp 64, gpt 8)")
    tr.add_argument("--layers", type=int, metavar="L", help="gpt: blocks (default 2)")
    tr.add_argument("--heads", type=int, metavar="H", help="gpt: attention heads (default 4)")
    tr.add_argument("--channels", type=int, metavar="C", help="gpt: embedding width (default 64)")
    tr.add_argument("--context", type=int, metavar="T", help="gpt: characters per window (default 64)")
    tr.add_argument("--seed", type=int, default=0, help="initial weights and batches (default 0)")
    tr.add_argument("--variants", action="append", metavar="NAMES",
                    help="prefer these variant names where a backend has them (default: each primitive's last)")
    tr.add_argument("--out", metavar="DIR", help="output folder (default: results/<machine>/)")
    tr.add_argument("--machine", metavar="NAME", help="machine name for the results folder")
    tr.add_argument("--no-charts", action="store_true", help="do not draw charts")
    tr.set_defaults(fn=cmd_train)
    c = sub.add_parser("calibrate", help="measure float32 error against the tolerances")
    c.add_argument("-p", "--primitives", action="append", metavar="PRIMS")
    c.set_defaults(fn=cmd_calibrate)
    return ap


def main(argv=None) -> int:
    sys.path.insert(0, str(REPO))           # python_impl/, cuda_impl/, mojo_impl/ are top-level packages
    _make_consoles()
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
        return args.fn(args)
    except (UsageError, InputError) as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted: results of this run were not written", highlight=False)
        return 130
    except Exception as e:                   # a bug or an environment problem: one line, details on -v
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            err_console.print_exception()
        first = (str(e).strip().splitlines() or [""])[0]
        err_console.print(f"[bold red]error:[/] {escape(type(e).__name__)}: {escape(first)} "
                          f"(run with -v for the traceback)", highlight=False, soft_wrap=True)
        return 1
    except BrokenPipeError:
        os._exit(0)
