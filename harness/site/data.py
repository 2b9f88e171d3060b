"""What the report is built from: one Machine per results folder (its results.json, its
training runs, its charts), read with the same loaders as `plot` and `show`, and the
questions every page asks of them (a variant's timed rows, its checks, the headline of a
language)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..core import results
from ..errors import UsageError

LANGUAGES = ("python", "cuda", "mojo")


@dataclass
class Machine:
    name: str
    folder: Path
    doc: dict                                   # results.json, upgraded to schema v2
    schema_version: int                         # the version the file was written in
    trainings: dict[str, dict] = field(default_factory=dict)     # model -> train_<model>.json

    @property
    def env(self) -> dict:
        return self.doc["env"]

    @property
    def rows(self) -> list[dict]:
        return self.doc["results"]

    def chart(self, stem: str) -> Path | None:
        """charts/<stem>.svg as the harness wrote it, if it did."""
        p = self.folder / "charts" / f"{stem}.svg"
        return p if p.exists() else None

    def timed(self, primitive: str, backend: str, variant: str | None = None) -> list[dict]:
        """Passing timed rows, smallest size first."""
        rs = [r for r in self.rows if r["primitive"] == primitive and r["backend"] == backend
              and r["phase"] == "timed" and r["status"] == "pass" and r.get("median_s")
              and (variant is None or r["variant"] == variant)]
        return sorted(rs, key=lambda r: r["size"] or 0)

    def rows_of(self, primitive: str, backend: str, variant: str) -> list[dict]:
        return [r for r in self.rows if r["primitive"] == primitive and r["backend"] == backend
                and r["variant"] == variant]

    def unavailable(self, backend: str) -> str | None:
        """Why a backend did not run at all on this machine (its variant-less skip row)."""
        for r in self.rows:
            if r["backend"] == backend and not r["variant"] and r["status"] == "skip":
                return r.get("reason") or "skipped"
        return None

    def bound(self, primitive: str) -> str:
        info = (self.doc.get("primitives") or {}).get(primitive) or {}
        return info.get("bound", "memory")


def load_machine(folder: Path) -> Machine:
    path = folder / "results.json"
    if not path.exists():
        raise UsageError(f"{folder} has no results.json: give a folder written by `python -m harness run`")
    doc = results.load(path)                                  # UsageError on a bad file; v1 upgraded
    m = Machine(name=doc["env"].get("machine") or folder.name, folder=folder, doc=doc,
                schema_version=doc.get("upgraded_from") or doc["schema_version"])
    from .. import train
    for tp in sorted(folder.glob("train_*.json")):
        m.trainings[tp.stem.removeprefix("train_")] = train.load(tp)
    return m


def primitives_in(machines: list[Machine]) -> list[str]:
    """Every primitive of the catalogue with a row on any machine, in catalogue order."""
    from ..core import catalogue
    seen = {r["primitive"] for m in machines for r in m.rows}
    return [n for n in catalogue.PRIMITIVES if n in seen]


def throughput(row: dict, bound: str) -> float | None:
    return row.get("gflops") if bound == "compute" else row.get("gbps")


def headline(m: Machine, primitive: str, backend: str) -> dict | None:
    """A language's best variant on one machine: at the largest size where this backend and
    NumPy were both timed (else its own largest), the variant with the highest throughput;
    and its speedup over pure Python at the largest size both were timed at."""
    rows = m.timed(primitive, backend)
    if not rows:
        return None
    numpy_sizes = {r["size"] for r in m.timed(primitive, "numpy")}
    sizes = [r["size"] for r in rows]
    common = [s for s in sizes if s in numpy_sizes]
    size = max(common) if common else max(sizes)
    bound = m.bound(primitive)
    at = [r for r in rows if r["size"] == size]
    best = max(at, key=lambda r: throughput(r, bound) or 0)
    vs_py = [r for r in rows if r["variant"] == best["variant"] and r.get("speedup_vs_python")]
    return {"row": best, "variant": best["variant"], "shape": best["shape"],
            "throughput": throughput(best, bound), "unit": "GFLOP/s" if bound == "compute" else "GB/s",
            "vs_numpy": best.get("speedup_vs_numpy"), "pct_of_peak": best.get("pct_of_peak"),
            "vs_python": vs_py[-1]["speedup_vs_python"] if vs_py else None,
            "vs_python_shape": vs_py[-1]["shape"] if vs_py else None}


def check_summary(m: Machine, primitive: str, backend: str, variant: str) -> dict:
    checks = [r for r in m.rows_of(primitive, backend, variant) if r["phase"] == "check"]
    passed = [r for r in checks if r["status"] == "pass"]
    bad = [r for r in checks if r["status"] in ("fail", "error")]
    skipped = [r for r in checks if r["status"] == "skip"]
    worst = max((r["tol_used_pct"] or 0) for r in passed) if passed else None
    return {"n": len(checks), "passed": len(passed), "bad": bad, "skipped": skipped, "worst_pct": worst,
            "distributions": sorted({r["distribution"] for r in checks if r.get("distribution")})}
