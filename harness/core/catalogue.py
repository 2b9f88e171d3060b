"""The catalogue: every primitive declared in harness/primitives/, by name.

Each module there (one per implementation stem: softmax.py holds softmax and, later, its
backward pass) lists its declarations in DECLARED. Nothing else in the project is keyed by
a primitive's name: backends find implementations by file stem and function name, the
tests and the runner take everything else from the declaration.

Function names are `<primitive>_<variant>` in every language (softmax_online in Python,
softmax_warp_online in CUDA, softmax_fused in Mojo). `resolve` maps a name back to its
primitive and variant, by the longest primitive name that prefixes it among the primitives
of that file, so `softmax_backward_naive` is softmax_backward's `naive` and
`softmax_block_online` is softmax's `block_online`.
"""
from __future__ import annotations

import importlib
import pkgutil

from ..errors import UsageError
from .declaration import Primitive

PRIMITIVES: dict[str, Primitive] = {}


def _discover() -> None:
    from .. import primitives as package
    found: list[Primitive] = []
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            found += list(importlib.import_module(f"{package.__name__}.{info.name}").DECLARED)
    for p in sorted(found, key=lambda p: (p.order, p.name)):
        declare(p)


def declare(p: Primitive) -> Primitive:
    """Register a declaration (the modules in harness/primitives/ do it by listing it)."""
    if p.name in PRIMITIVES and PRIMITIVES[p.name] is not p:
        raise ValueError(f"primitive {p.name!r} is declared twice")
    if p.forward is not None and p.forward not in PRIMITIVES:
        raise ValueError(f"{p.name}: its forward {p.forward!r} is not declared (declare it first)")
    PRIMITIVES[p.name] = p
    return p


def get(name: str) -> Primitive:
    try:
        return PRIMITIVES[name]
    except KeyError:
        raise UsageError(f"unknown primitive {name!r}; valid: {', '.join(PRIMITIVES)}") from None


def with_stem(stem: str) -> list[Primitive]:
    return [p for p in PRIMITIVES.values() if p.file_stem == stem]


def stems() -> list[str]:
    return list(dict.fromkeys(p.file_stem for p in PRIMITIVES.values()))


def resolve(stem: str, function: str) -> tuple[Primitive, str] | None:
    """`<primitive>_<variant>` -> (primitive, variant) among the primitives of one file."""
    best = None
    for p in with_stem(stem):
        prefix = p.name + "_"
        if function.startswith(prefix) and len(function) > len(prefix):
            if best is None or len(p.name) > len(best.name):
                best = p
    return (best, function[len(best.name) + 1:]) if best else None


_discover()
