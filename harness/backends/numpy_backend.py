"""`numpy`: what a user would write with NumPy, in float32 — the honest CPU baseline.

Each primitive is the idiomatic vectorised expression. They make temporaries (softmax
and layernorm walk memory several times), which is exactly what fused Mojo and CUDA
kernels are measured against. matmul is BLAS (OpenBLAS in the PyPI wheel).
"""
from __future__ import annotations

import math

import numpy as np

from .base import Availability, Backend, CallBound, Kernel

F32 = np.float32
GELU_SCALE = F32(math.sqrt(2.0 / math.pi))


def add(a, b):
    return a + b


def relu(x):
    return np.maximum(x, F32(0))


def gelu(x):
    return F32(0.5) * x * (F32(1) + np.tanh(GELU_SCALE * (x + F32(0.044715) * x * x * x)))


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def layernorm(x, gamma, beta):
    mean = x.mean(axis=-1, keepdims=True)
    xc = x - mean
    var = (xc * xc).mean(axis=-1, keepdims=True)
    return xc * (F32(1) / np.sqrt(var + F32(1e-5))) * gamma + beta


def matmul(a, b):
    return a @ b


FUNCTIONS = {"add": add, "relu": relu, "gelu": gelu, "softmax": softmax,
             "layernorm": layernorm, "matmul": matmul}


def _identity(out):
    return out


class NumpyKernel(Kernel):
    def __init__(self, fn):
        self.fn = fn

    def bind(self, inputs):
        return CallBound(self.fn, tuple(inputs.values()), _identity)


class NumpyBackend(Backend):
    name = "numpy"
    device = "cpu"
    language = ""
    description = f"NumPy {np.__version__} float32 (matmul: BLAS)"

    def availability(self):
        return Availability(True, detail=self.description)

    def variants(self, primitive):
        return ["numpy"] if primitive in FUNCTIONS else []

    def prepare(self, primitive, variant):
        return NumpyKernel(FUNCTIONS[primitive])
