"""`harness train mlp`: one model on every backend, judged against float64 step by step."""
import json

import numpy as np
import pytest

from harness import train
from harness.cli import main
from harness.models import data as data_mod
from harness.models import mlp

SMALL = mlp.Config(hidden=32, batch=16, steps=45)


def _run(backends, cfg=SMALL, **kw):
    return train.train(list(backends), cfg, **kw)


def _by(doc, name):
    return next(r for r in doc["runs"] if r["backend"] == name)


def test_the_data_is_the_shipped_digits_with_a_fixed_split():
    d = data_mod.load()
    assert d.x_train.shape == (1438, 64) and d.x_test.shape == (359, 64)
    assert d.x_train.dtype == np.float32 and 0 <= d.x_train.min() and d.x_train.max() <= 1
    assert set(np.unique(d.y_train)) == set(range(10))
    a, b = data_mod.batches(d, 64, 50, seed=3), data_mod.batches(d, 64, 50, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == 50
    assert not np.array_equal(a[0], data_mod.batches(d, 64, 1, seed=4)[0])


def test_numpy_trains_the_default_model_agrees_with_float64_and_reaches_90_percent():
    doc = _run(["numpy"], cfg=mlp.Config())
    r = _by(doc, "numpy")
    assert r["status"] == "pass", r["reason"]
    a = r["agreement"]
    assert a["ok"] and a["steps"] == train.AGREE_STEPS and a["tol_used_pct"] < 100
    assert all(g["ok"] for g in r["gradients"].values()) and set(r["gradients"]) == {"dW1", "db1", "dW2", "db2"}
    assert r["test_accuracy"] >= 0.90 and doc["reference"]["test_accuracy"] >= 0.90
    assert abs(r["train_loss"] - doc["reference"]["train_loss"]) < 1e-3
    st = r["step_time"]
    expected = mlp.Config().steps - train.AGREE_STEPS - train.WARMUP_STEPS
    assert st["p25_s"] <= st["median_s"] <= st["p75_s"] and 0.8 * expected <= st["samples"] <= expected
    assert set(r["breakdown"]) == set(mlp.PRIMITIVE)
    assert r["speedup_vs_numpy"] == pytest.approx(1.0)


def test_pure_python_runs_the_same_model_for_fewer_steps_and_says_so():
    doc = _run(["python", "numpy"])
    r = _by(doc, "python")
    assert r["status"] == "pass", r["reason"]
    assert r["steps"] == train.PYTHON_STEPS == doc["python_steps"] and r["agreement"]["ok"]
    assert r["step_time"] and r["speedup_vs_python"] == pytest.approx(1.0)
    assert _by(doc, "numpy")["speedup_vs_python"] > 1


def test_a_backend_whose_matmul_rounds_to_tf32_is_caught_at_its_first_call(register):
    register(tf32="tests.fakes:Tf32Backend")
    doc = _run(["tf32"])
    r = _by(doc, "tf32")
    assert r["status"] == "fail"
    bad = r["agreement"]["first_bad"]
    assert bad["step"] == 1 and bad["call"] == "fc1" and bad["tensor"] == "h"
    assert train.exit_status(doc) == 1


def test_a_backend_with_a_wrong_gradient_fails_the_gradient_check(register):
    register(nomask="tests.fakes:NoMaskBackend")
    doc = _run(["nomask"])
    r = _by(doc, "nomask")
    assert r["status"] == "fail" and "step-1 gradients off" in r["reason"]
    assert not r["gradients"]["dW1"]["ok"] and not r["gradients"]["db1"]["ok"]
    assert r["gradients"]["dW2"]["ok"] and r["gradients"]["db2"]["ok"]       # above the relu: right
    bad = r["agreement"]["first_bad"]
    assert (bad["step"], bad["call"], bad["tensor"]) == (1, "relu_backward", "dh")
    assert "first wrong: step 1, relu_backward -> dh" in r["reason"]


def test_backends_without_the_primitives_or_unavailable_are_skipped_with_why(register):
    register(gone="tests.fakes:UnavailableBackend")
    doc = _run(["gone", "numpy"])
    assert _by(doc, "gone")["status"] == "skip" and "no such hardware" in _by(doc, "gone")["reason"]
    assert _by(doc, "numpy")["status"] == "pass" and train.exit_status(doc) == 0


def test_the_torch_peer_is_the_same_model_and_agrees():
    pytest.importorskip("torch", reason="torch is optional (pip install torch==2.13.0 for the CPU build)")
    doc = _run(["torch-cpu", "numpy"])
    r = _by(doc, "torch-cpu")
    assert r["status"] == "pass", r["reason"]
    assert r["agreement"]["ok"] and all(g["ok"] for g in r["gradients"].values())
    assert r["test_accuracy"] == pytest.approx(_by(doc, "numpy")["test_accuracy"], abs=0.03)


def test_the_command_writes_results_csv_and_charts(capsys, tmp_path):
    code = main(["train", "mlp", "-b", "numpy", "--steps", "60", "--hidden", "32", "--batch", "16",
                 "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "numpy" in out and "float64 ref" in out
    doc = json.loads((tmp_path / "train_mlp.json").read_text())
    assert doc["schema"] == "kernel-rosetta-train" and doc["env"]["cpu_model"] and doc["config"]["hidden"] == 32
    assert (tmp_path / "train_mlp.csv").read_text().startswith("backend,status")
    for stem in ("loss_mlp", "step_time_mlp", "breakdown_mlp"):
        assert (tmp_path / "charts" / f"{stem}.png").exists() and (tmp_path / "charts" / f"{stem}.svg").exists()


@pytest.mark.parametrize("argv,msg", [
    (["train", "cnn"], "unknown model 'cnn'; valid: mlp, gpt"),
    (["train", "mlp", "--layers", "2"], "--layers is for `train gpt`"),
    (["train", "mlp", "--steps", "0"], "bad --steps 0"),
    (["train", "mlp", "-b", "fortran"], "unknown backend 'fortran'"),
])
def test_bad_train_usage_is_one_line_and_exit_2(capsys, argv, msg):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1
