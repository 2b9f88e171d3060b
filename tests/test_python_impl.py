"""Every pure-Python variant against the float64 reference, on every distribution its
primitive declares, at every odd check size, for several seeds."""
import importlib

import numpy as np
import pytest

from harness.backends.pure_python import module_variants
from harness.core import catalogue
from harness.core.verify import verify

SEEDS = (0, 1, 2)


def _functions(prim):
    return module_variants(prim.file_stem).get(prim.name, {})


def _cases():
    for name, prim in catalogue.PRIMITIVES.items():
        for variant in _functions(prim):
            for dims in prim.check_dims:
                for dist in prim.all_distributions:
                    yield pytest.param(name, variant, dims, dist, id=f"{name}-{variant}-{prim.shape_label(dims)}-{dist}")


@pytest.mark.parametrize("name,variant,dims,dist", list(_cases()))
def test_python_variant_matches_reference(name, variant, dims, dist):
    prim = catalogue.PRIMITIVES[name]
    fn = _functions(prim)[variant]
    # The expensive matmul checks get one seed; everything else three.
    seeds = SEEDS[:1] if prim.flop_count(dims) > 1e6 else SEEDS
    for seed in seeds:
        inputs = prim.make_inputs(dims, dist, seed)
        outs = prim.call_numpy_style(fn, {k: a.tolist() for k, a in inputs.items()})
        outs = {t.name: np.asarray(outs[t.name], dtype=t.np_dtype) for t in prim.outputs}
        v = verify(prim, inputs, outs, dims)
        assert v.ok, f"seed {seed}: {v.message}"


def test_every_python_file_lists_its_variants_in_the_header():
    for stem in catalogue.stems():
        mod = importlib.import_module(f"python_impl.{stem}")
        found = module_variants(stem)
        assert found and all(len(v) >= 1 for v in found.values()), stem
        assert all(len(v) >= 2 for p, v in found.items() if catalogue.get(p).forward is None), \
            f"{stem}: a forward pass teaches with at least two variants"
        for variants in found.values():
            for variant in variants:
                assert f"  {variant} " in mod.__doc__, f"{stem}: header does not describe variant {variant!r}"


def test_a_function_not_named_for_a_primitive_is_refused(monkeypatch):
    import types
    from harness.backends.base import BackendError
    mod = types.ModuleType("python_impl.add")
    mod.VARIANTS = [lambda a, b: a]                    # named "<lambda>"
    monkeypatch.setitem(__import__("sys").modules, "python_impl.add", mod)
    with pytest.raises(BackendError, match="not named <primitive>_<variant>"):
        module_variants("add")


def test_python_impl_uses_no_numpy():
    import pathlib
    for path in pathlib.Path("python_impl").glob("*.py"):
        text = path.read_text()
        assert "import numpy" not in text and "from numpy" not in text, path


def test_softmax_variants_survive_the_overflow_case():
    for fn in module_variants("softmax")["softmax"].values():
        out = fn([[1000.0, 1.0, 2.0, 3.0], [1e4 + 1, 1e4, 1e4, 1e4]])
        assert out[0] == pytest.approx([1.0, 0.0, 0.0, 0.0], abs=1e-300)
        assert sum(out[1]) == pytest.approx(1.0)


def test_layernorm_of_a_constant_row_is_beta():
    for fn in module_variants("layernorm")["layernorm"].values():
        assert fn([[3.5] * 7], [2.0] * 7, [0.25] * 7) == [[0.25] * 7]
