"""The argument block: how Python passes one kernel call's arguments to Mojo, for any
primitive, as one int.

A Mojo kernel entry takes a single Python int, the address of a block of 64-bit words
(numpy int64) packed here:

    MAGIC, count, (tag, value) * count

The slots follow the declaration, in one fixed order: every tensor in `prim.tensors`
order (all roles), then the dims in `prim.dims` order, then the scalars in
`prim.scalars` order. Tensors carry their address and a tag for their dtype; dims and
int32/int64 scalars are integers; a float32 scalar is its 32-bit pattern in the slot's
low half. mojo_impl/python_entry.mojo reads the block with accessors that check every
slot's index and tag, so a block packed for another signature raises a clear error in
Mojo instead of being read as garbage.

A tag cannot say that an address points to an array of the right size. So `pack`
refuses, before it takes any address, every array that is not aligned, C-contiguous and
of exactly its declared dtype and shape (and writable, for the tensors a kernel writes).
The block holds raw addresses: whoever keeps it must keep the arrays alive with it (the
op layer's Call does, and through it the bound case).

A scalar may change between runs without repacking (AdamW's step number changes every
training step): `scalar_slots` says which word holds each scalar's value, and
`write_scalar` checks a new value exactly as `pack` does and writes just that word.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ...core.declaration import Primitive
from ...errors import InputError

MAGIC = 0x4B52_4152_4753            # "KRARGS", as in python_entry.mojo
HEADER = 2                          # MAGIC, count
F32_TENSOR, I64_TENSOR, INT, FLOAT32 = 1, 2, 3, 4
TAG_NAMES = {F32_TENSOR: "float32 tensor", I64_TENSOR: "int64 tensor", INT: "integer", FLOAT32: "float32 scalar"}
TENSOR_TAGS = {"float32": F32_TENSOR, "int64": I64_TENSOR}
SCALAR_TAGS = {"int32": INT, "int64": INT, "float32": FLOAT32}

# The float32 slot value is read as the first 4 bytes of its word on both sides; the
# integers are native int64. Every machine Mojo targets today is little-endian.
assert sys.byteorder == "little", "the Mojo argument block assumes a little-endian machine"


@dataclass(frozen=True)
class Slot:
    name: str                       # tensor, dim or scalar name from the declaration
    tag: int
    what: str                       # "tensor", "dim" or "scalar"

    @property
    def kind(self) -> str:
        return TAG_NAMES[self.tag]


def layout(prim: Primitive) -> tuple[Slot, ...]:
    """The slots of prim's kernels, in order: tensors, dims, scalars."""
    return (tuple(Slot(t.name, TENSOR_TAGS[t.dtype], "tensor") for t in prim.tensors)
            + tuple(Slot(d, INT, "dim") for d in prim.dims)
            + tuple(Slot(s.name, SCALAR_TAGS[s.dtype], "scalar") for s in prim.scalars))


def signature(prim: Primitive) -> str:
    """The slot names as the .mojo files' comments write them: 'x, gamma, beta, y | rows, cols | eps'."""
    groups = [[t.name for t in prim.tensors], list(prim.dims), [s.name for s in prim.scalars]]
    return " | ".join(", ".join(g) for g in groups if g)


def _check_array(prim: Primitive, t, a, shape: tuple[int, ...]) -> None:
    """Everything a raw address cannot carry, checked before it is taken."""
    where = f"{prim.name}: tensor {t.name!r} cannot be passed to Mojo"
    if not isinstance(a, np.ndarray):
        raise InputError(f"{where}: it is a {type(a).__name__}, not a numpy array")
    if a.dtype != np.dtype(t.np_dtype):                  # exact: native byte order only
        raise InputError(f"{where}: it must be {t.dtype}, got {a.dtype}")
    if a.shape != shape:
        raise InputError(f"{where}: it must have shape {shape}, got {a.shape}")
    if a.size == 0:
        raise InputError(f"{where}: it is empty")
    if not a.flags.c_contiguous:
        raise InputError(f"{where}: it must be C-contiguous")
    if not a.flags.aligned:
        raise InputError(f"{where}: it must be aligned to its {a.dtype.itemsize}-byte elements")
    if t.is_output and not a.flags.writeable:
        raise InputError(f"{where}: the kernel writes it ({t.role}), but it is read-only")


def _integer(prim: Primitive, what: str, name: str, value, bits: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{prim.name}: {what} {name!r} must be an integer, got {value!r}")
    v = int(value)
    if not -(1 << (bits - 1)) <= v < (1 << (bits - 1)):
        raise InputError(f"{prim.name}: {what} {name!r} = {v} does not fit in int{bits}")
    return v


def _scalar_value(prim: Primitive, s, v) -> int | np.float32:
    """A scalar's value as its slot holds it, checked as pack checks it."""
    if s.dtype == "float32":
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise InputError(f"{prim.name}: scalar {s.name!r} must be a number, got {v!r}")
        return np.float32(v)
    return _integer(prim, "scalar", s.name, v, 32 if s.dtype == "int32" else 64)


def pack(prim: Primitive, arrays: dict[str, np.ndarray], dims, scalars: dict) -> np.ndarray:
    """The argument block for one call of one of prim's kernels: a read-only int64 array.

    `arrays` holds every tensor by name (all roles), `dims` the dims tuple, `scalars`
    every scalar by name (typed values, e.g. from prim.scalar_values()). InputError on
    anything that does not match the declaration exactly; no address is taken before
    every array has passed."""
    dims = tuple(dims)
    if len(dims) != len(prim.dims):
        raise InputError(f"{prim.name}: {len(dims)} dims given, the declaration has {len(prim.dims)} "
                         f"({', '.join(prim.dims)})")
    names = {t.name for t in prim.tensors}
    if set(arrays) != names:
        missing, extra = sorted(names - set(arrays)), sorted(set(arrays) - names)
        raise InputError(f"{prim.name}: the kernel takes tensors ({', '.join(t.name for t in prim.tensors)}); "
                         + "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                                     + ([f"unexpected {', '.join(extra)}"] if extra else [])))
    declared = {s.name for s in prim.scalars}
    if set(scalars) != declared:
        raise InputError(f"{prim.name}: the kernel takes scalars ({', '.join(s.name for s in prim.scalars) or 'none'}), "
                         f"got ({', '.join(sorted(scalars)) or 'none'})")
    dim_values = [_integer(prim, "dim", d, v, 64) for d, v in zip(prim.dims, dims)]
    if any(v < 1 for v in dim_values):
        raise InputError(f"{prim.name}: dims must be positive, got {dict(zip(prim.dims, dim_values))}")
    for t in prim.tensors:
        _check_array(prim, t, arrays[t.name], prim.shape_of(t, dims))
    values = [_scalar_value(prim, s, scalars[s.name]) for s in prim.scalars]

    # Every array passed: now, and only now, take the addresses.
    slots = layout(prim)
    block = np.zeros(HEADER + 2 * len(slots), dtype=np.int64)
    block[0], block[1] = MAGIC, len(slots)
    i = 0
    for t in prim.tensors:
        block[HEADER + 2 * i], block[HEADER + 2 * i + 1] = TENSOR_TAGS[t.dtype], arrays[t.name].ctypes.data
        i += 1
    for v in dim_values:
        block[HEADER + 2 * i], block[HEADER + 2 * i + 1] = INT, v
        i += 1
    as_f32 = block.view(np.float32)                     # the same bytes, 4 at a time
    for s, v in zip(prim.scalars, values):
        block[HEADER + 2 * i] = SCALAR_TAGS[s.dtype]
        if s.dtype == "float32":
            as_f32[2 * (HEADER + 2 * i + 1)] = v        # low half of the value word; high half stays 0
        else:
            block[HEADER + 2 * i + 1] = v
        i += 1
    block.flags.writeable = False
    return block


def scalar_slots(prim: Primitive) -> dict[str, int]:
    """{scalar name: index of the block word that holds its value}."""
    first = len(prim.tensors) + len(prim.dims)
    return {s.name: HEADER + 2 * (first + i) + 1 for i, s in enumerate(prim.scalars)}


def write_scalar(prim: Primitive, block: np.ndarray, word: int, scalar, value) -> None:
    """Check `value` for `scalar` (a declaration Scalar) as pack does, then write it into
    word `word` of a writable block: an int as itself, a float32 as its bit pattern in
    the low half with the high half zero."""
    v = _scalar_value(prim, scalar, value)
    if scalar.dtype == "float32":
        block[word] = int(np.float32(v).view(np.uint32))
    else:
        block[word] = v


def decode(block: np.ndarray) -> list[tuple[str, int | float]]:
    """The slots of a packed block as (kind, value): for tests and debugging."""
    if block[0] != MAGIC:
        raise ValueError("not an argument block")
    out = []
    as_f32 = block.view(np.float32)
    for i in range(int(block[1])):
        tag, k = int(block[HEADER + 2 * i]), HEADER + 2 * i + 1
        value = float(as_f32[2 * k]) if tag == FLOAT32 else int(block[k])
        out.append((TAG_NAMES.get(tag, f"tag {tag}"), value))
    return out
