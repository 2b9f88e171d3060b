"""pyproject.toml, pixi.toml, the Makefile and CI agree with each other and the README."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower()


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pixi():
    return tomllib.loads((ROOT / "pixi.toml").read_text())


def test_pixi_names_the_same_packages_as_pyproject_with_the_same_pins():
    project = _pyproject()["project"]
    reqs = list(project["dependencies"])
    for extra in ("dev", "cuda", "mojo"):
        reqs += project["optional-dependencies"][extra]
    py = {_name(r): r[len(_name(r)):].strip() for r in reqs}
    pixi = {k.lower(): v for k, v in _pixi()["pypi-dependencies"].items()}
    assert py.keys() == pixi.keys()
    for name, spec in py.items():
        assert spec.replace(" ", "") == pixi[name].replace(" ", ""), name


def test_pixi_tasks_match_makefile_targets():
    make = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", make, flags=re.M))
    tasks = set(_pixi()["tasks"])
    assert {"bench", "test", "gpu-check"} <= tasks
    assert tasks <= targets, tasks - targets


def test_ci_calls_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "make test" in ci and "make test" in readme and "make bench" in readme


def test_gpu_check_installs_nothing():
    make = (ROOT / "Makefile").read_text()
    recipe = make.split("\ngpu-check:")[1].split("\n\n")[0]
    assert "pip" not in recipe and "$(STAMP)" not in make.split("\ngpu-check:")[1].split("\n")[0]
    assert "-m gpu" in recipe and "harness run" in recipe


def test_no_machine_paths_in_tracked_text_files():
    import subprocess
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    bad = []
    for f in files:
        p = ROOT / f
        if p.suffix in {".png", ".svg"} or not p.is_file():
            continue
        text = p.read_text(errors="ignore")
        for pat in ("/work/", "/tmp/", "/root/", "/home/"):
            if pat in text and f != "tests/test_packaging.py":
                bad.append(f"{f}: {pat}")
    assert not bad, bad


def test_readme_quotes_the_committed_results_verbatim():
    """Figures in the README come from a run: each results block is the summary.md the
    harness wrote for that machine, unedited, and the charts it shows exist."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"<!-- summary: (\S+) -->\n(.*?)<!-- /summary -->", readme, flags=re.S)
    assert blocks, "the README quotes no results"
    for path, text in blocks:
        assert (ROOT / path).read_text() == text, f"README block differs from {path}: rerun and paste it again"
        # written by the harness beside its run's own JSON (a benchmark's or a training's)
        assert (ROOT / path).with_name("results.json").exists() or list((ROOT / path).parent.glob("train_*.json"))
    for image in re.findall(r"!\[[^\]]*\]\((results/[^)]+)\)", readme):
        assert (ROOT / image).exists(), image
