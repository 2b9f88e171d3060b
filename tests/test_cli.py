"""The command line: verbs, files written, exit codes 0/1/2, one-line errors."""
import json
import os
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_and_doctor(capsys):
    code, out, _ = _run(capsys, "list")
    assert code == 0 and "softmax" in out and "python" in out and "three_pass" in out
    code, out, _ = _run(capsys, "doctor")
    assert code == 0 and "numpy" in out and "yes" in out


@pytest.mark.parametrize("argv,msg", [
    (["run", "-p", "conv"], "unknown primitive 'conv'; valid: add, add_backward, relu, relu_backward"),
    (["run", "-b", "fortran"], "unknown backend 'fortran'; valid: python, numpy"),
    (["run", "--sizes", "12,abc"], "bad size 'abc'"),
    (["run", "--sizes", "0"], "sizes must be positive"),
    (["run", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["explode"], "invalid choice: 'explode'"),
    (["show", "conv"], "unknown primitive 'conv'"),
    (["plot", "missing.json"], "no such results file"),
    (["show", "softmax", "--variant", "nope"], "softmax has no variant 'nope' in any language; valid: python: three_pass"),
    (["show", "softmax", "--step", "nope"], "softmax has no step 'nope'; valid: naive, online, one_read"),
    (["show", "softmax", "--step", "online", "--variant", "fused"], "give --variant or --step, not both"),
    (["compare", "missing.json", str(RESULTS / "intel-xeon-2core" / "results.json")], "no such results file"),
    (["compare", str(RESULTS / "amd-epyc-2core" / "results.json"), str(RESULTS / "intel-xeon-2core" / "results.json")],
     "is results schema v1 and"),
    (["report", "no-such-folder"], "not a results folder: no-such-folder"),
    (["report", str(ROOT / "harness")], "harness has no results.json"),
])
def test_bad_usage_is_one_line_and_exit_2(capsys, argv, msg):
    code, out, err = _run(capsys, *argv)
    assert code == 2
    assert msg in " ".join(err.split())
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unwritable_out_dir(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = _run(capsys, "run", "-p", "add", "-b", "numpy", "--out", str(blocker / "sub"))
    assert code == 2 and "cannot write to" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to a read-only directory")
def test_read_only_out_dir(capsys, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    code, _, err = _run(capsys, "run", "-p", "add", "-b", "numpy", "--out", str(ro))
    assert code == 2 and "cannot write to" in err


def test_run_writes_results_csv_and_charts_and_exits_0(capsys, tmp_path):
    code, out, _ = _run(capsys, "run", "-p", "add,matmul", "-b", "python,numpy", "--sizes", "16,32",
                        "--quick", "--out", str(tmp_path))
    assert code == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["env"]["cpu_model"] and doc["peaks"]["cpu"]["gflops"] > 0
    timed = [r for r in doc["results"] if r["phase"] == "timed"]
    assert {r["backend"] for r in timed} == {"python", "numpy"} and all(r["status"] == "pass" for r in timed)
    assert (tmp_path / "results.csv").read_text().startswith("primitive,backend,variant")
    charts = {p.name for p in (tmp_path / "charts").iterdir()}
    for stem in ("speedup_add", "throughput_add", "speedup_matmul", "throughput_matmul", "roofline"):
        assert f"{stem}.png" in charts and f"{stem}.svg" in charts
    assert "×py" in out and "×np" in out and "matmul" in out
    assert doc["schema_version"] == 2 and doc["floors"]["numpy"]["median_s"] > 0
    assert all(r["outputs"] for r in timed)


def test_run_exits_1_when_a_result_is_wrong(capsys, tmp_path, register):
    register(zeros="tests.fakes:ZerosBackend")
    code, out, _ = _run(capsys, "run", "-p", "add", "-b", "numpy,zeros", "--sizes", "64", "--quick",
                        "--no-charts", "--out", str(tmp_path))
    assert code == 1 and "fail" in out


def test_plot_redraws_from_a_saved_file(capsys, tmp_path):
    _run(capsys, "run", "-p", "relu", "-b", "numpy", "--sizes", "64", "--quick", "--no-charts", "--out", str(tmp_path))
    code, out, _ = _run(capsys, "plot", str(tmp_path / "results.json"), "--out", str(tmp_path / "c"))
    assert code == 0 and (tmp_path / "c" / "throughput_relu.svg").exists()


def test_plot_and_show_read_a_version_1_file(capsys, tmp_path):
    from pathlib import Path
    v1 = Path(__file__).with_name("data") / "results_v1.json"
    code, out, err = _run(capsys, "plot", str(v1), "--out", str(tmp_path / "c"), "--summary")
    assert code == 0, err
    assert (tmp_path / "c" / "throughput_matmul.svg").exists() and (tmp_path / "c" / "roofline.png").exists()
    assert "**matmul**" in out
    code, out, err = _run(capsys, "show", "matmul", "--results", str(v1))
    assert code == 0, err
    assert "schema v1" in out and "numpy/numpy" in out


def test_show_with_results_from_this_run(capsys, tmp_path):
    _run(capsys, "run", "-p", "layernorm", "-b", "python,numpy", "--sizes", "16", "--quick", "--no-charts",
         "--out", str(tmp_path))
    code, out, _ = _run(capsys, "show", "layernorm", "--results", str(tmp_path / "results.json"))
    assert code == 0 and "python/two_pass" in out and "schema v2" in out


def test_show_puts_the_languages_side_by_side(capsys):
    code, out, _ = _run(capsys, "show", "softmax")
    assert code == 0
    assert "def softmax_online" in out and "python_impl/softmax.py" in out
    assert "cuda_impl/softmax.cu" in out and "mojo_impl/softmax.mojo" in out


def test_an_unexpected_error_is_one_line_and_exit_1(capsys, monkeypatch):
    import harness.cli as cli

    def boom(args):
        raise RuntimeError("disk on fire\nmore detail")
    monkeypatch.setattr(cli, "cmd_list", boom)
    code, _, err = _run(capsys, "list")
    assert code == 1 and "RuntimeError: disk on fire" in err and "-v" in err
    assert "Traceback" not in err and "more detail" not in err


def test_doctor_survives_a_probe_that_raises(capsys, register):
    register(probecrash="tests.fakes:ProbeCrashBackend")
    code, out, _ = _run(capsys, "doctor")
    assert code == 0 and "availability check failed" in " ".join(out.split())


def test_show_one_variant_in_each_language_that_has_it(capsys):
    code, out, _ = _run(capsys, "show", "matmul", "--variant", "naive")
    assert code == 0
    assert "CUDA · naive" in out and "Mojo · naive" in out and "matmul_naive" in out
    assert "No Python variant for variant naive" in " ".join(out.split())


def test_show_one_step_of_the_ladder(capsys):
    code, out, _ = _run(capsys, "show", "softmax", "--step", "online")
    assert code == 0
    flat = " ".join(out.split())
    assert "Python · online" in flat and "CUDA · warp_online" in flat and "Mojo · online_simd" in flat
    assert "def softmax_online" in out and "softmax_warp_online" in out and "def softmax_online_simd" in out
    assert "def softmax_three_pass" not in out          # one step, not the whole file


def test_compare_two_runs(capsys, tmp_path):
    a = RESULTS / "intel-xeon-2core" / "results.json"
    doc = json.loads(a.read_text())
    doc["env"]["machine"] = "other-box"
    doc["env"]["cpu_cores"] = 4
    for r in doc["results"]:
        if r.get("median_s"):
            r["median_s"] /= 2
    b = tmp_path / "b.json"
    b.write_text(json.dumps(doc))
    code, out, err = _run(capsys, "compare", str(a), str(b))
    assert code == 0, err
    flat = " ".join(out.split())
    assert "cpu_cores" in flat and "other-box" in flat and " 2 " in flat        # ratio 2: B twice as fast
    doc["results"] = [r for r in doc["results"] if r["primitive"] == "nothing"]
    b.write_text(json.dumps(doc))
    code, _, err = _run(capsys, "compare", str(a), str(b))
    assert code == 2 and "share no case" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("verb", ["list", "doctor", "run", "train", "show", "report", "compare", "plot", "build",
                                  "calibrate"])
def test_every_verb_has_help(capsys, verb):
    with pytest.raises(SystemExit) as e:
        main([verb, "-h"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "usage:" in out
