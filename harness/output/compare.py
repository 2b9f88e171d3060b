"""`compare A.json B.json`: two runs side by side, case by case. A case is one primitive,
backend, variant, size and dtype timed and verified in both; its ratio is A's median over
B's (above 1: B is faster). The environment fields that differ are listed first, since
they are what a ratio between machines measures. Used by the CLI and by the report's
comparison page."""
from __future__ import annotations

from rich.table import Table

from ..errors import UsageError
from .report import fmt_time

ENV_FIELDS = ("machine", "cpu_model", "cpu_cores", "cpu_simd", "llc_bytes", "gpu", "gpu_compute_capability", "nvidia_driver",
              "os", "python", "numpy", "blas", "mojo", "mojo_target_cpu", "torch", "nvrtc", "git_commit")


def version(doc: dict) -> int:
    """The schema version the file was written in (before any upgrade on load)."""
    return doc.get("upgraded_from") or doc["schema_version"]


def comparable(a: dict, b: dict, a_name: str, b_name: str) -> None:
    """Refuse, in one line, two runs that cannot be compared case by case."""
    if version(a) != version(b):
        raise UsageError(f"{a_name} is results schema v{version(a)} and {b_name} is v{version(b)}: "
                         f"compare needs two runs of one schema version (rerun the older one)")
    if not cases(a, b):
        raise UsageError(f"{a_name} and {b_name} share no case (no primitive, backend, variant and size "
                         f"timed and verified in both)")


def _key(r: dict) -> tuple:
    return (r["primitive"], r["backend"], r["variant"], r["shape"], r.get("dtype", "float32"))


def _timed(doc: dict) -> dict:
    return {_key(r): r for r in doc["results"]
            if r["phase"] == "timed" and r["status"] == "pass" and r.get("median_s")}


def cases(a: dict, b: dict) -> list[tuple[tuple, dict, dict]]:
    ta, tb = _timed(a), _timed(b)
    return [(k, ta[k], tb[k]) for k in ta if k in tb]


def env_diff(a: dict, b: dict) -> list[tuple[str, str, str]]:
    out = []
    for f in ENV_FIELDS:
        va, vb = a["env"].get(f), b["env"].get(f)
        if va != vb:
            out.append((f, _show(va), _show(vb)))
    return out


def _show(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, (list, tuple)):
        return " ".join(map(str, v))
    return str(v)


def name_of(doc: dict, fallback: str) -> str:
    return doc["env"].get("machine") or fallback


def tables(a: dict, b: dict, a_name: str, b_name: str) -> list[Table]:
    an, bn = name_of(a, a_name), name_of(b, b_name)
    if an == bn:
        an, bn = f"{an} (A)", f"{bn} (B)"
    env = Table(title="environment fields that differ", title_justify="left", pad_edge=False)
    for c in ("field", an, bn):
        env.add_column(c, overflow="fold")
    for f, va, vb in env_diff(a, b):
        env.add_row(f, va, vb)
    t = Table(title=f"the same cases on both: ratio = {an} median / {bn} median (above 1: {bn} is faster)",
              title_justify="left", pad_edge=False)
    for c, j in (("primitive", "left"), ("backend/variant", "left"), ("size", "right"), (an, "right"),
                 (bn, "right"), ("ratio", "right")):
        t.add_column(c, justify=j)
    last = None
    for (prim, backend, variant, shape, _), ra, rb in cases(a, b):
        if last is not None and prim != last:
            t.add_section()
        last = prim
        t.add_row(prim, f"{backend}/{variant}" if variant != backend else backend, shape,
                  fmt_time(ra["median_s"]), fmt_time(rb["median_s"]), f"{ra['median_s'] / rb['median_s']:.3g}")
    return [env, t]
