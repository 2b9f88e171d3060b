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
