"""results.json and results.csv: a stable, versioned schema, written atomically.

Schema (version 2):

    {"schema": "kernel-rosetta-results", "schema_version": 2,
     "env": {...fingerprint...}, "peaks": {"cpu": {...}, "gpu": {...}},
     "floors": {backend: {"median_s", "p25_s", "p75_s", "samples", "calls_per_sample", "how"}},
     "primitives": {name: {"summary", "dims", "bound", "stem", "tensors": [...], "scalars": [...]}},
     "baselines": [backends held to the regular inputs only: NumPy and the peers],
     "config": {...how the run was made...},
     "results": [row, ...]}

A row is one (primitive, backend, variant, size) measured ("timed") or one correctness
check at odd dims and an adversarial distribution ("check"; `stress` marks the inputs a
baseline is measured on but not held to). ROW_FIELDS is the order of the CSV columns.
Status is pass | fail | error | skip; `reason` says why for anything but pass. `outputs`
holds one verdict per output tensor (ok, errors, worst element, % of tolerance used);
the row's own error fields are those of `worst_output`. Timed rows carry the backend's
empty-call floor (`floor_s`) and how many calls each sample timed (`calls_per_sample`).
Speedups are filled only for passing timed rows, against passing rows at the same
primitive, dims and dtype.

Version 1 files (one output per row, no floors) are read too: `load` upgrades them.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path

from ..errors import UsageError

SCHEMA = "kernel-rosetta-results"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)

ROW_FIELDS = (
    "primitive", "backend", "variant", "phase", "size", "shape", "dtype", "distribution", "stress", "seed",
    "status", "reason",
    "worst_output", "max_abs_err", "max_rel_err", "tol_used_pct", "worst_index", "worst_got", "worst_ref",
    "verified_after",
    "median_s", "p25_s", "p75_s", "samples", "calls_per_sample", "timer", "floor_s",
    "e2e_median_s", "e2e_p25_s", "e2e_p75_s", "transfer", "compile_s", "compile_cached",
    "flops", "bytes", "gflops", "gbps", "device", "pct_of_peak", "peak_kind",
    "speedup_vs_python", "speedup_vs_numpy", "e2e_speedup_vs_numpy", "flags", "outputs",
)


def new_row(**fields) -> dict:
    row = {k: None for k in ROW_FIELDS}
    row["dtype"] = "float32"
    row["stress"] = False
    row["flags"] = []
    row["outputs"] = {}
    row.update(fields)
    unknown = set(row) - set(ROW_FIELDS)
    if unknown:
        raise KeyError(f"unknown result fields: {sorted(unknown)}")
    return row


def _clean(v):
    """JSON has no NaN/inf: store them as strings so the file stays standard JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it: a killed run
    leaves either the old file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def to_json(doc: dict) -> str:
    return json.dumps(_clean(doc), indent=1, sort_keys=False) + "\n"


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ROW_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        flat = dict(r)
        flat["flags"] = "; ".join(r.get("flags") or [])
        if isinstance(flat.get("worst_index"), (list, tuple)):
            flat["worst_index"] = " ".join(map(str, flat["worst_index"]))
        flat["outputs"] = "; ".join(
            f"{name}: {'ok' if v.get('ok') else 'FAIL'} {_pct(v.get('tol_used_pct'))}"
            for name, v in (r.get("outputs") or {}).items())
        w.writerow(flat)
    return buf.getvalue()


def _pct(v) -> str:
    return "" if v is None else f"{v:.3g}% of tolerance"


def describe_primitive(prim) -> dict:
    """What a results file records of each declaration, so that charts and reports can be
    drawn from the file alone, without the catalogue that wrote it."""
    return {"summary": prim.summary, "dims": list(prim.dims), "bound": prim.bound, "stem": prim.file_stem,
            "forward": prim.forward, "distributions": list(prim.distributions), "stress": list(prim.stress),
            "tensors": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "role": t.role}
                        for t in prim.tensors],
            "scalars": [{"name": sc.name, "dtype": sc.dtype, "default": sc.default} for sc in prim.scalars]}


def make_document(env: dict, peaks: dict, config: dict, rows: list[dict], floors: dict | None = None,
                  primitives: dict | None = None, baselines=()) -> dict:
    if primitives is None:
        from . import catalogue
        primitives = {p: describe_primitive(catalogue.PRIMITIVES[p]) for p in dict.fromkeys(r["primitive"] for r in rows)
                      if p in catalogue.PRIMITIVES}
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "env": env, "peaks": peaks,
            "floors": floors or {}, "primitives": primitives, "baselines": sorted(baselines), "config": config,
            "results": rows}


def write(out_dir: Path, doc: dict) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    jpath, cpath = out_dir / "results.json", out_dir / "results.csv"
    atomic_write_text(jpath, to_json(doc))
    atomic_write_text(cpath, to_csv(doc["results"]))
    return jpath, cpath


def load(path) -> dict:
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no such results file: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"cannot read {path} as results JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise UsageError(f"{path} is not a Kernel Rosetta results file (no \"schema\": \"{SCHEMA}\")")
    version = doc.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise UsageError(f"{path} has schema_version {version}; this harness reads versions "
                         f"{', '.join(map(str, READABLE_VERSIONS))}")
    return upgrade_v1(doc) if version == 1 else doc


# Version 1 rows had one output, unnamed; these were the output names of the primitives then.
_V1_OUTPUT = {"add": "out", "relu": "y", "gelu": "y", "softmax": "y", "layernorm": "y", "matmul": "C"}
_V1_BOUND = {"matmul": "compute"}


def upgrade_v1(doc: dict) -> dict:
    """A version 1 document as version 2: each row's single verdict becomes its one entry in
    `outputs`; floors and calls per sample were not measured then (None, 1); no stress rows."""
    rows = []
    for r in doc.get("results", []):
        row = new_row(**{k: v for k, v in r.items() if k in ROW_FIELDS})
        name = _V1_OUTPUT.get(r.get("primitive"), "out")
        row["worst_output"] = name if r.get("tol_used_pct") is not None else None
        if r.get("tol_used_pct") is not None:
            row["outputs"] = {name: {"ok": r.get("status") == "pass",
                                     "max_abs_err": r.get("max_abs_err"), "max_rel_err": r.get("max_rel_err"),
                                     "tol_used_pct": r.get("tol_used_pct"), "worst_index": r.get("worst_index"),
                                     "worst_got": r.get("worst_got"), "worst_ref": r.get("worst_ref"),
                                     "n_bad": None, "message": r.get("reason") if r.get("status") == "fail" else None}}
        if row.get("phase") == "timed" and row.get("median_s") is not None:
            row["calls_per_sample"] = 1
        rows.append(row)
    prims = {p: {"summary": "", "dims": [], "bound": _V1_BOUND.get(p, "memory"), "stem": p, "forward": None,
                 "distributions": [], "stress": [], "tensors": [], "scalars": []}
             for p in dict.fromkeys(r["primitive"] for r in rows)}
    return {**doc, "schema_version": SCHEMA_VERSION, "upgraded_from": 1, "floors": {}, "primitives": prims,
            "baselines": ["numpy", "cupy", "torch"],
            "results": rows}
