"""results.json / results.csv: schema, round trip, and writes that are atomic."""
import csv
import io
import json
import os

import pytest

from pathlib import Path

from harness.core import results
from harness.errors import UsageError

V1 = Path(__file__).with_name("data") / "results_v1.json"


def _doc(rows=None):
    rows = rows or [results.new_row(primitive="add", backend="numpy", variant="numpy", phase="timed", size=8,
                                    shape="8", status="pass", median_s=1e-6, p25_s=1e-6, p75_s=2e-6,
                                    samples=10, max_abs_err=0.0, max_rel_err=0.0, tol_used_pct=0.0,
                                    gflops=float("inf"), gbps=1.0, flags=["in cache"])]
    return results.make_document({"machine": "test"}, {"cpu": {"gflops": 1.0}}, {"quick": True}, rows)


def test_round_trip_and_required_fields(tmp_path):
    jpath, cpath = results.write(tmp_path, _doc())
    doc = results.load(jpath)
    assert doc["schema_version"] == results.SCHEMA_VERSION
    row = doc["results"][0]
    for f in ("primitive", "backend", "variant", "size", "shape", "dtype", "status", "reason", "max_abs_err",
              "max_rel_err", "tol_used_pct", "median_s", "p25_s", "p75_s", "samples", "gflops", "gbps"):
        assert f in row
    assert row["gflops"] == "inf"                 # standard JSON has no inf: stored as a string
    json.loads(jpath.read_text())                 # strict JSON parser accepts it
    rows = list(csv.DictReader(io.StringIO(cpath.read_text())))
    assert list(rows[0]) == list(results.ROW_FIELDS)
    assert rows[0]["flags"] == "in cache"


def test_unknown_field_is_rejected():
    with pytest.raises(KeyError):
        results.new_row(primtive="add")


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    results.write(tmp_path, _doc())
    before = (tmp_path / "results.json").read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    doc = _doc()
    doc["results"][0]["backend"] = "changed"
    with pytest.raises(OSError):
        results.write(tmp_path, doc)
    assert (tmp_path / "results.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.json"]


def test_a_write_killed_midway_never_shows_half_a_file(tmp_path, monkeypatch):
    """Interrupt after the data is written but before the rename: the target is untouched."""
    target = tmp_path / "results.json"
    target.write_text("old")
    real_fsync = os.fsync

    def interrupted(fd):
        real_fsync(fd)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        results.atomic_write_text(target, "x" * 100_000)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize("content,msg", [
    ("not json", "cannot read"),
    ('{"a": 1}', "not a Kernel Rosetta results file"),
    ('{"schema": "kernel-rosetta-results", "schema_version": 99}', "schema_version 99; this harness reads versions 1, 2"),
])
def test_load_rejects_other_files_with_one_line(tmp_path, content, msg):
    p = tmp_path / "r.json"
    p.write_text(content)
    with pytest.raises(UsageError, match=msg):
        results.load(p)


def test_load_missing_file(tmp_path):
    with pytest.raises(UsageError, match="no such results file"):
        results.load(tmp_path / "nope.json")


def test_version_2_rows_carry_per_output_verdicts_floors_and_the_declarations(tmp_path):
    row = results.new_row(primitive="layernorm", backend="numpy", variant="numpy", phase="check", shape="3x5",
                          status="pass", stress=True, worst_output="y",
                          outputs={"y": {"ok": True, "tol_used_pct": 12.5}})
    doc = results.make_document({"machine": "t"}, {}, {}, [row], floors={"numpy": {"median_s": 1e-7}},
                                baselines={"numpy"})
    jpath, cpath = results.write(tmp_path, doc)
    back = results.load(jpath)
    assert back["schema_version"] == 2 and back["floors"]["numpy"]["median_s"] == 1e-7
    assert back["primitives"]["layernorm"]["bound"] == "memory" and back["baselines"] == ["numpy"]
    assert [t["name"] for t in back["primitives"]["layernorm"]["tensors"]] == ["x", "gamma", "beta", "y"]
    assert back["results"][0]["outputs"]["y"]["tol_used_pct"] == 12.5
    assert "y: ok 12.5% of tolerance" in cpath.read_text()


def test_a_version_1_file_is_upgraded_on_load():
    doc = results.load(V1)
    assert doc["schema_version"] == 2 and doc["upgraded_from"] == 1 and doc["floors"] == {}
    assert doc["primitives"]["matmul"]["bound"] == "compute" and doc["primitives"]["softmax"]["bound"] == "memory"
    checked = [r for r in doc["results"] if r["tol_used_pct"] is not None]
    assert checked and all(set(r["outputs"]) == {r["worst_output"]} for r in checked)
    assert all(r["outputs"][r["worst_output"]]["ok"] == (r["status"] == "pass") for r in checked)
    assert all(r["stress"] is False for r in doc["results"])
