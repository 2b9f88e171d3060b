"""Every pure-Python variant against the float64 reference, on every distribution its
primitive declares, at every odd check size, for several seeds."""
import importlib

import numpy as np
import pytest

from harness import catalogue
from harness.verify import verify

SEEDS = (0, 1, 2)


def _cases():
    for name, prim in catalogue.PRIMITIVES.items():
        mod = importlib.import_module(f"python_impl.{name}")
        for variant in mod.VARIANTS:
            for dims in prim.check_dims:
                for dist in prim.distributions:
                    yield pytest.param(name, variant, dims, dist, id=f"{name}-{variant}-{prim.shape_label(dims)}-{dist}")


@pytest.mark.parametrize("name,variant,dims,dist", list(_cases()))
def test_python_variant_matches_reference(name, variant, dims, dist):
    prim = catalogue.PRIMITIVES[name]
    fn = importlib.import_module(f"python_impl.{name}").VARIANTS[variant]
    # The expensive matmul checks get one seed; everything else three.
    seeds = SEEDS[:1] if prim.flops(dims) > 1e6 else SEEDS
    for seed in seeds:
        inputs = prim.make_inputs(dims, dist, seed)
        out = np.asarray(fn(*(a.tolist() for a in inputs.values())), dtype=np.float32)
        v = verify(prim, inputs, out, dims)
        assert v.ok, f"seed {seed}: {v.message}"


def test_every_python_file_lists_its_variants_in_the_header():
    for name in catalogue.PRIMITIVES:
        mod = importlib.import_module(f"python_impl.{name}")
        assert len(mod.VARIANTS) >= 2, name
        for variant in mod.VARIANTS:
            assert f"  {variant} " in mod.__doc__, f"{name}: header does not describe variant {variant!r}"


def test_python_impl_uses_no_numpy():
    import pathlib
    for path in pathlib.Path("python_impl").glob("*.py"):
        text = path.read_text()
        assert "import numpy" not in text and "from numpy" not in text, path


def test_softmax_variants_survive_the_overflow_case():
    from python_impl import softmax
    for fn in softmax.VARIANTS.values():
        out = fn([[1000.0, 1.0, 2.0, 3.0], [1e4 + 1, 1e4, 1e4, 1e4]])
        assert out[0] == pytest.approx([1.0, 0.0, 0.0, 0.0], abs=1e-300)
        assert sum(out[1]) == pytest.approx(1.0)


def test_layernorm_of_a_constant_row_is_beta():
    from python_impl import layernorm
    for fn in layernorm.VARIANTS.values():
        assert fn([[3.5] * 7], [2.0] * 7, [0.25] * 7) == [[0.25] * 7]
