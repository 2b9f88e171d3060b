"""results.json and results.csv: a stable, versioned schema, written atomically.

Schema (version 1):

    {"schema": "kernel-rosetta-results", "schema_version": 1,
     "env": {...fingerprint...}, "peaks": {"cpu": {...}, "gpu": {...}},
     "config": {...how the run was made...},
     "results": [row, ...]}

A row is one (primitive, backend, variant, size) measured ("timed") or one correctness
check at odd dims and an adversarial distribution ("check"). ROW_FIELDS is the
order of the CSV columns. Status is pass | fail | error | skip; `reason` says why for
anything but pass. Speedups are filled only for passing timed rows, against passing
rows at the same primitive, dims and dtype.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path

from .errors import UsageError

SCHEMA = "kernel-rosetta-results"
SCHEMA_VERSION = 1

ROW_FIELDS = (
    "primitive", "backend", "variant", "phase", "size", "shape", "dtype", "distribution", "seed",
    "status", "reason",
    "max_abs_err", "max_rel_err", "tol_used_pct", "worst_index", "worst_got", "worst_ref", "verified_after",
    "median_s", "p25_s", "p75_s", "samples", "timer",
    "e2e_median_s", "e2e_p25_s", "e2e_p75_s", "transfer", "compile_s", "compile_cached",
    "flops", "bytes", "gflops", "gbps", "device", "pct_of_peak", "peak_kind",
    "speedup_vs_python", "speedup_vs_numpy", "e2e_speedup_vs_numpy", "flags",
)


def new_row(**fields) -> dict:
    row = {k: None for k in ROW_FIELDS}
    row["dtype"] = "float32"
    row["flags"] = []
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
        w.writerow(flat)
    return buf.getvalue()


def make_document(env: dict, peaks: dict, config: dict, rows: list[dict]) -> dict:
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "env": env, "peaks": peaks,
            "config": config, "results": rows}


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
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(f"{path} has schema_version {doc.get('schema_version')}; "
                         f"this harness reads version {SCHEMA_VERSION}")
    return doc
