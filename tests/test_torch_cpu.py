"""The torch-cpu peer: optional (torch is not a dependency), unavailable with the install
command when torch is absent, a baseline held to the regular inputs only when present."""
import builtins

import pytest

from harness.backends.torch_cpu import TorchCpuBackend
from harness.core import catalogue
from harness.core.runner import RunConfig, Runner
from harness.core.timing import TimingConfig


def test_without_torch_it_is_unavailable_with_the_install_command(monkeypatch):
    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_torch)
    b = TorchCpuBackend()
    a = b.availability()
    assert not a.ok and "torch is not installed" in a.reason and "torch==2.13.0" in a.hint
    assert b.variants("matmul") == ["matmul"]                     # what it would run, for `list`


@pytest.fixture(scope="module")
def torch_cpu():
    b = TorchCpuBackend()
    if not b.availability().ok:
        pytest.skip(f"torch-cpu: {b.availability().reason} (optional: {b.availability().hint})")
    return b


def test_every_op_passes_the_regular_inputs_and_is_excused_only_on_stress(torch_cpu, monkeypatch):
    from harness import backends
    monkeypatch.setitem(backends._instances, "torch-cpu", torch_cpu)
    fast = TimingConfig(warmup_calls=1, warmup_s=0.0, min_samples=3, max_samples=3, target_s=0.0)
    runner = Runner(RunConfig(primitives=list(catalogue.PRIMITIVES), backends=["torch-cpu"], sizes=[16],
                              timing=fast, quick=True))
    rows = runner.run()
    mine = [r for r in rows if r["backend"] == "torch-cpu" and "no implementation" not in (r["reason"] or "")]
    assert mine and all(r["status"] == "pass" for r in mine if not r["stress"]), \
        [(r["primitive"], r["shape"], r["distribution"], r["reason"]) for r in mine if r["status"] != "pass" and not r["stress"]]
    assert runner.exit_status() == 0
    assert runner.floors["torch-cpu"]["median_s"] > 0
