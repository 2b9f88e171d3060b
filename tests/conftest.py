import pytest

from harness import backends


@pytest.fixture
def register(monkeypatch):
    """Register extra (fake) backends by name for one test."""
    def _register(**named):
        for name, target in named.items():
            monkeypatch.setitem(backends.REGISTRY, name, target)
        monkeypatch.setattr(backends, "_instances", {})
    return _register


@pytest.fixture(scope="module")
def mojo_backend():
    """The Mojo backend, or a skip that says why Mojo cannot run here and how to install it."""
    from harness.backends.mojo.backend import MojoBackend
    b = MojoBackend()
    avail = b.availability()
    if not avail.ok:
        pytest.skip(f"Mojo is not available: {avail.reason} (to install: {avail.hint})")
    return b
