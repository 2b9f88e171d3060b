# python_entry: how Python calls the kernels in this folder.
#
# Every kernel here is a plain Mojo function on typed pointers and sizes, the way a CUDA
# kernel is a function on device pointers: def relu_simd(x: F32Ptr, y: F32Ptr, n: Int).
# Python cannot pass a pointer, so every kernel is called the same way, with ONE Python
# int: the address of an argument block that Python packed (harness/backends/mojo/args.py)
# after checking every array against the primitive's declaration.
#
# The block is an array of 64-bit words:
#
#     MAGIC, count, (tag, value) * count
#
# and the slots follow the declaration (harness/primitives/<stem>.py), always in this order:
# every tensor (whatever its role: in, out, inout), then every dim, then every scalar.
# layernorm, for instance, is x, gamma, beta, y | rows, cols | eps. A tag says what its
# value is:
#
#     F32_TENSOR  the address of a float32 array     read with args.f32(i)
#     I64_TENSOR  the address of an int64 array      read with args.i64(i)
#     INT         a dim, or an int32/int64 scalar    read with args.int(i)
#     FLOAT32     a float32 scalar: its 32-bit pattern in the slot's low half
#                                                    read with args.float32(i)
#
# Each accessor checks the slot's index and tag and raises a clear error (a Python
# exception) on a mismatch, and `args.expect(n)` checks the count, so a block packed for
# another signature is refused instead of read as garbage. What a tag cannot say (that
# an address points to enough memory of the right shape) Python checked before it took
# any address: a C-contiguous, aligned array of exactly the declared dtype and shape.
#
# A kernel file has one small unpack function per primitive, which maps the slots onto its
# kernel type, and registers each variant under its full name, <primitive>_<variant>:
#
#     comptime ReluKernel = def(F32Ptr, F32Ptr, Int) thin -> None
#
#     def relu_call[kernel: ReluKernel](args: Args) raises:
#         args.expect(3)                              # x, y | n
#         kernel(args.f32(0), args.f32(1), args.int(2))
#
#     var m = new_module("relu")
#     add_variant[relu_call[relu_simd]](m, "relu_simd")
#
# The harness lists a module's variants by reading these add_variant lines (in order,
# naive first), without building it. new_module also registers `simd_width` and `noop`:
# an empty kernel called through the same block and GIL path, the empty-call floor.

from std.math import exp
from std.utils.numerics import isnan
from std.python import Python, PythonObject
from std.python._cpython import GILReleased
from std.python.bindings import PythonModuleBuilder
from std.runtime import initialize_runtime
from std.sys import simd_width_of

comptime F32Ptr = Pointer[Float32, MutAnyOrigin]
comptime I64Ptr = Pointer[Int64, MutAnyOrigin]
# SIMD width for float32 on the target this module was compiled for: 8 with AVX2,
# 16 with AVX-512. Kernels use it as their vector length.
comptime F32_WIDTH = simd_width_of[DType.float32]()

# exp without denormals, for the kernels' softmaxes (attention, softmax, cross-entropy).
# Mojo's exp returns a denormal for every input below about -87, -inf included (exp(-inf)
# comes out as 4e-39, not 0), and each operation on a denormal takes a microcode assist
# of ~100 cycles unless the thread flushes denormals to zero. Mojo's worker threads do;
# the Python thread that runs a one-thread call does not. Measured on the 2-core Xeon:
# exp of a vector of -1 costs 0.17 ns a float, of -inf or -90 4.5 ns, 27x more. The
# masked tail of a softmax row (-inf lanes) and the masked scores of causal attention
# hit it on every row: the flash attention forward at batch x heads = 32, T = 64,
# d = 16 took 3.2 ms with exp and 0.13 ms with this, and the cross-entropy backward of
# the default GPT (512 x 61 logits) 80 us and 20 us. exp(-80) = 1.8e-35 is still a
# normal float32, and a term that small cannot move a sum that holds a 1.
# NaN stays NaN, which Mojo's exp does not promise: exp(NaN) came out finite, and a
# softmax row holding a NaN logit summed to a number. The test is isnan, not x != x:
# the compiler folds x != x to False.
comptime EXP_FLOOR: Float32 = -80.0


def exp_or_zero[width: Int](x: SIMD[DType.float32, width]) -> SIMD[DType.float32, width]:
    """exp(x); exactly 0 where x < -80 (-inf included); NaN where x is NaN."""
    comptime V = SIMD[DType.float32, width]
    var low = x.lt(V(EXP_FLOOR))
    var e = low.select(V(0), exp(low.select(V(0), x)))     # the low lanes never reach exp
    return isnan(x).select(x, e)


def exp_or_zero(x: Float32) -> Float32:
    return exp_or_zero[1](SIMD[DType.float32, 1](x))[0]


# The block's format; harness/backends/mojo/args.py writes the same constants.
comptime MAGIC: Int64 = 0x4B52_4152_4753           # "KRARGS"
comptime HEADER = 2                                 # MAGIC, count
comptime F32_TENSOR: Int64 = 1
comptime I64_TENSOR: Int64 = 2
comptime INT: Int64 = 3
comptime FLOAT32: Int64 = 4


def tag_name(tag: Int64) -> String:
    if tag == F32_TENSOR:
        return "a float32 tensor"
    if tag == I64_TENSOR:
        return "an int64 tensor"
    if tag == INT:
        return "an integer"
    if tag == FLOAT32:
        return "a float32 scalar"
    return String("an unknown tag (", tag, ")")


struct Args:
    """A view of one argument block: its address and its slot count. Reading it touches
    no Python object, so the kernels can run with the GIL released."""

    var address: Int
    var count: Int

    def __init__(out self, address: PythonObject) raises:
        self.address = Int(py=address)
        if self.address == 0 or self.address % 8 != 0:
            raise Error(String("not an argument block address: ", self.address))
        var words = I64Ptr(unsafe_from_address=self.address)
        if words[unsafe_offset=0] != MAGIC:
            raise Error("not a kernel argument block (bad magic word)")
        self.count = Int(words[unsafe_offset=1])

    def _word(self, k: Int) -> Int64:
        return I64Ptr(unsafe_from_address=self.address)[unsafe_offset=k]

    def _value(self, i: Int, tag: Int64) raises -> Int:
        """The word index of slot i's value, once its index and tag are checked."""
        if i < 0 or i >= self.count:
            raise Error(String("argument slot ", i, " requested, the block holds ", self.count))
        var have = self._word(HEADER + 2 * i)
        if have != tag:
            raise Error(String("argument slot ", i, " holds ", tag_name(have), ", the kernel reads ",
                               tag_name(tag), " there"))
        return HEADER + 2 * i + 1

    def expect(self, n: Int) raises:
        if n != self.count:
            raise Error(String("the kernel takes ", n, " argument slots, the block holds ", self.count))

    def f32(self, i: Int) raises -> F32Ptr:
        return F32Ptr(unsafe_from_address=Int(self._word(self._value(i, F32_TENSOR))))

    def i64(self, i: Int) raises -> I64Ptr:
        return I64Ptr(unsafe_from_address=Int(self._word(self._value(i, I64_TENSOR))))

    def int(self, i: Int) raises -> Int:
        return Int(self._word(self._value(i, INT)))

    def float32(self, i: Int) raises -> Float32:
        # The low half of the 64-bit slot: the first 4 bytes on a little-endian machine,
        # and Python wrote them through a float32 view of the same bytes.
        var k = self._value(i, FLOAT32)
        return F32Ptr(unsafe_from_address=self.address)[unsafe_offset=2 * k]


# What a kernel file writes per primitive: read the slots, call the kernel.
comptime Unpack = def(Args) raises thin -> None


def entry[unpack: Unpack](address: PythonObject) raises -> PythonObject:
    """The one Python-visible signature: f(block_address) -> None."""
    var args = Args(address)
    # Releasing the GIL costs ~30 ns per call (measured) and lets other Python threads run
    # while a kernel does: nothing below touches a Python object. An error raised in
    # there (a slot mismatch) takes the GIL back on its way out and reaches Python as an
    # Exception with its message.
    with GILReleased(Python()):
        unpack(args)
    return PythonObject(None)


def add_variant[unpack: Unpack](mut m: PythonModuleBuilder, name: StringSpan[ImmStaticOrigin]) raises:
    """Register one variant under its full name, <primitive>_<variant>. The harness reads
    these lines from the source to list the variants, in order, without building."""
    m.def_function[entry[unpack]](name, docstring="kernel(block_address): see harness/backends/mojo/args.py")


def noop_call(args: Args) raises:
    pass


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
    m.def_function[entry[noop_call]]("noop", docstring="noop(block_address): nothing, through the kernels' path")
    return m^
