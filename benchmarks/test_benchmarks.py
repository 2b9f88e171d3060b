"""pytest-benchmark over the same catalogue: every available backend/variant at one mid size
per primitive (the middle of its quick ladder: small enough that pure Python finishes).

    pytest benchmarks --benchmark-only                    # everything available
    pytest benchmarks --benchmark-only -k "matmul and not python" --benchmark-group-by=group

Outputs are poisoned and verified before benchmarking and verified again after, as in the
harness; inout tensors are restored before every call (untimed: pytest-benchmark's setup).
Unavailable backends are skipped with their reason. Not part of `make test`.
"""
import pytest

from harness import backends
from harness.core import catalogue
from harness.core.verify import verify


def mid_size(prim) -> int:
    return prim.quick_ladder[(len(prim.quick_ladder) - 1) // 2]


def _cases():
    for prim in catalogue.PRIMITIVES:
        for name in backends.names():
            b = backends.get(name)
            avail = b.availability()
            variants = b.variants(prim) if avail.ok else [None]
            for v in variants or [None]:
                reason = None if avail.ok and v else (avail.reason if not avail.ok else f"{name} has no {prim} yet")
                yield pytest.param(prim, name, v, reason, id=f"{prim}-{name}-{v or 'unavailable'}")


@pytest.mark.parametrize("prim_name,backend_name,variant,skip_reason", list(_cases()))
def test_benchmark(benchmark, prim_name, backend_name, variant, skip_reason):
    if skip_reason:
        pytest.skip(f"{backend_name}: {skip_reason}")
    prim = catalogue.get(prim_name)
    dims = prim.size_to_dims(mid_size(prim))
    inputs = prim.make_inputs(dims, "normal", 0)
    bound = backends.get(backend_name).prepare(prim_name, variant).bind(inputs)
    try:
        before = verify(prim, inputs, bound.run(), dims)
        assert before.ok, before.message
        benchmark.group = f"{prim_name} {prim.shape_label(dims)}"
        benchmark.extra_info.update(flops=prim.flop_count(dims), bytes=prim.byte_count(dims))
        if prim.has_inout:
            benchmark.pedantic(bound.call, setup=bound.restore, rounds=50)
        else:
            benchmark(bound.call)
        bound.poison()
        after = verify(prim, inputs, bound.run(), dims)
        assert after.ok, "wrong after benchmarking: " + after.message
    finally:
        bound.close()
