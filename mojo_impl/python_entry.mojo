# python_entry: how Python calls the kernels in this folder.
#
# Every kernel here is a plain Mojo function on typed pointers and sizes, the way a
# CUDA kernel is a function on device pointers. Python cannot pass a pointer, so it
# passes each numpy array's address as an int (`arr.ctypes.data`, taken once at bind
# time by harness/backends/mojo_backend.py). The entry points below turn those ints
# back into pointers, release the GIL, and run the kernel.
#
# They check nothing: an int is not a buffer, so a wrong dtype, shape or address
# cannot be detected here. The Python side validates every array (float32,
# C-contiguous, shapes, output allocated by it) before any address crosses over.
#
# One entry point per calling convention (inputs, then output, then sizes):
#   unary_entry      (x, y, n)                        relu, gelu
#   binary_entry     (a, b, y, n)                     add
#   rows_entry       (x, y, rows, cols)               softmax
#   layernorm_entry  (x, gamma, beta, y, rows, cols)  layernorm
#   matmul_entry     (a, b, c, M, K, N)               matmul
# A module starts with `var m = new_module("relu")` and registers each variant with,
# e.g., m.def_function[unary_entry[relu_simd]]("simd").

from std.python import Python, PythonObject
from std.python._cpython import GILReleased
from std.python.bindings import PythonModuleBuilder
from std.runtime import initialize_runtime
from std.sys import simd_width_of

comptime F32Ptr = Pointer[Float32, MutAnyOrigin]
# SIMD width for float32 on the target this module was compiled for: 8 with AVX2,
# 16 with AVX-512. Kernels use it as their vector length.
comptime F32_WIDTH = simd_width_of[DType.float32]()

comptime UnaryKernel = def(F32Ptr, F32Ptr, Int) thin -> None
comptime BinaryKernel = def(F32Ptr, F32Ptr, F32Ptr, Int) thin -> None
comptime RowsKernel = def(F32Ptr, F32Ptr, Int, Int) thin -> None
comptime LayernormKernel = def(F32Ptr, F32Ptr, F32Ptr, F32Ptr, Int, Int) thin -> None
comptime MatmulKernel = def(F32Ptr, F32Ptr, F32Ptr, Int, Int, Int) thin -> None


def f32_ptr(address: PythonObject) raises -> F32Ptr:
    """A Python int holding an address, as a float32 pointer (nothing is checked)."""
    return address.unsafe_get_as_pointer[DType.float32]()


# Releasing the GIL costs ~30 ns per call (measured) and lets other Python threads
# run while a kernel does: the kernels touch no Python object once their arguments
# are unpacked.

def unary_entry[kernel: UnaryKernel](x: PythonObject, y: PythonObject, n: PythonObject) raises -> PythonObject:
    var xp, yp, count = f32_ptr(x), f32_ptr(y), Int(py=n)
    with GILReleased(Python()):
        kernel(xp, yp, count)
    return PythonObject(None)


def binary_entry[kernel: BinaryKernel](
    a: PythonObject, b: PythonObject, y: PythonObject, n: PythonObject
) raises -> PythonObject:
    var ap, bp, yp, count = f32_ptr(a), f32_ptr(b), f32_ptr(y), Int(py=n)
    with GILReleased(Python()):
        kernel(ap, bp, yp, count)
    return PythonObject(None)


def rows_entry[kernel: RowsKernel](
    x: PythonObject, y: PythonObject, rows: PythonObject, cols: PythonObject
) raises -> PythonObject:
    var xp, yp, r, c = f32_ptr(x), f32_ptr(y), Int(py=rows), Int(py=cols)
    with GILReleased(Python()):
        kernel(xp, yp, r, c)
    return PythonObject(None)


def layernorm_entry[kernel: LayernormKernel](
    x: PythonObject, gamma: PythonObject, beta: PythonObject, y: PythonObject,
    rows: PythonObject, cols: PythonObject,
) raises -> PythonObject:
    var xp, gp, bp, yp = f32_ptr(x), f32_ptr(gamma), f32_ptr(beta), f32_ptr(y)
    var r, c = Int(py=rows), Int(py=cols)
    with GILReleased(Python()):
        kernel(xp, gp, bp, yp, r, c)
    return PythonObject(None)


def matmul_entry[kernel: MatmulKernel](
    a: PythonObject, b: PythonObject, c: PythonObject, m: PythonObject, k: PythonObject, n: PythonObject
) raises -> PythonObject:
    var ap, bp, cp = f32_ptr(a), f32_ptr(b), f32_ptr(c)
    var mm, kk, nn = Int(py=m), Int(py=k), Int(py=n)
    with GILReleased(Python()):
        kernel(ap, bp, cp, mm, kk, nn)
    return PythonObject(None)


def simd_width() raises -> PythonObject:
    """The float32 SIMD width this module was compiled with (reported by the harness)."""
    return PythonObject(F32_WIDTH)


def new_module(name: StringSpan[ImmStaticOrigin]) raises -> PythonModuleBuilder:
    """A module builder with what every kernel module shares, called from PyInit_<name>."""
    # A shared library has no Mojo main() to start the runtime that parallelize() runs
    # on; the docs ask shared libraries to start it themselves (idempotent, cheap).
    initialize_runtime()
    var m = PythonModuleBuilder(name)
    m.def_function[simd_width]("simd_width", docstring="float32 SIMD lanes of the compile target")
    return m^
