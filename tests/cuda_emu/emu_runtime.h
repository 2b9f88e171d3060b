// emu_runtime.h - a CPU stand-in for the CUDA device runtime, for tests only.
//
// emu.py compiles a kernel source as
//
//     #include "emu_runtime.h"
//     #line 1 "<kernel>.cu"
//     <the kernel source, with `extern __shared__` declarations rewritten>
//     <a few generated entry points: emu_describe, emu_launch, emu_max_threads>
//
// with `g++ -std=c++20 -O1 -shared -fPIC`, and calls emu_launch() in a child
// process.  This header supplies the CUDA keywords and built-ins the kernels
// use, plus a tiny scheduler that runs every CUDA thread of a block as a
// fiber (a coroutine with its own stack) on ONE OS thread:
//
//   * blocks run one after another, each to completion, in blockIdx order
//     (x fastest), so a `static` variable is a correct model of __shared__;
//   * inside a block, a fiber runs until it reaches __syncthreads(), a warp
//     primitive (__shfl_*_sync, __syncwarp, __ballot_sync, ...) or returns;
//     then the next fiber runs.  When every fiber is waiting, the scheduler
//     releases the barrier or performs the warp exchange, or reports a
//     deadlock.  The order is fixed, so every run is reproducible.
//
// Because fibers only switch at those points, plain read-modify-write is
// atomic (atomicAdd needs no lock), and code that relies on lock-step warp
// execution without __syncwarp (pre-Volta "warp-synchronous" tricks) gives
// wrong answers here - which is what CUDA's own documentation says it may do.
//
// Apart from the context switch (section 6), nothing here tries to be fast
// or clever; comments explain why a choice was made.
#pragma once

#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <source_location>
#include <type_traits>
#include <utility>

// Fibers switch with a 6-register hand-written routine on x86-64.  Elsewhere
// (or with -DEMU_USE_UCONTEXT) we fall back to swapcontext(), which is
// portable but makes a sigprocmask system call on every switch.
// Measured on the development machine (2-core AMD EPYC VM, g++ 12 -O1), for
// one scheduler -> fiber -> scheduler round trip:
//     hand-written swap       ~15 ns
//     _setjmp/_longjmp        ~180 ns  (glibc 2.36; not used)
//     swapcontext             ~450 ns
// Inside the emulator (scheduler bookkeeping included) that is ~30 million
// fiber switches per second with the hand-written swap and ~1.8 million with
// swapcontext.  A 1000x1000 register-tiled matmul does ~16 million, so the
// choice is the difference between ~1.5 s and ~9 s for that launch.
#if !defined(__x86_64__) || defined(EMU_USE_UCONTEXT)
#include <ucontext.h>
#define EMU_UCONTEXT 1
#else
#define EMU_UCONTEXT 0
#endif

// ---------------------------------------------------------------------------
// 1. CUDA keywords.  Everything is ordinary host code, so most qualifiers
//    vanish.  Standard headers are all included above: some of these names
//    (e.g. __noinline__) are also spelled inside libstdc++ attributes.
// ---------------------------------------------------------------------------
#define __CUDACC_RTC__ 1  // the sources are written for NVRTC
#define __CUDA_EMU__ 1    // lets a kernel tell it runs in this emulator
#define __global__
#define __device__
#define __host__
#define __constant__      // plain global; there is no host API to fill it
#define __forceinline__ inline  // a hint; results never depend on inlining
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)  // emu.py reads the bound from the source
#define __align__(n) __attribute__((aligned(n)))
// __restrict__ is already a g++ keyword.

// __shared__ variables become `static`: one block runs at a time, so one copy
// shared by all its threads is exactly right.  Putting them in their own
// section lets the launcher find them (the linker defines __start_/__stop_
// symbols for it) and poison them with NaN bytes before every block, as real
// shared memory starts each block with garbage.
#define __shared__ __attribute__((section("emu_shared"))) static
extern "C" char __start_emu_shared[] __attribute__((weak, visibility("hidden")));
extern "C" char __stop_emu_shared[] __attribute__((weak, visibility("hidden")));

#define EMU_EXPORT __attribute__((visibility("default")))

// ---------------------------------------------------------------------------
// 2. Built-in types and variables.
// ---------------------------------------------------------------------------
// Alignments match CUDA: float4 loads in kernels assume 16-byte alignment.
struct alignas(8) float2 { float x, y; };
struct float3 { float x, y, z; };
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) int2 { int x, y; };
struct int3 { int x, y, z; };
struct alignas(16) int4 { int x, y, z, w; };
struct alignas(8) uint2 { unsigned int x, y; };
struct uint3 { unsigned int x, y, z; };
struct alignas(16) uint4 { unsigned int x, y, z, w; };
struct alignas(16) double2 { double x, y; };

inline float2 make_float2(float x, float y) { return {x, y}; }
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int3 make_int3(int x, int y, int z) { return {x, y, z}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return {x, y, z}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

// The scheduler rewrites threadIdx before resuming each fiber.  A kernel
// that keeps threadIdx.x in a register across __syncthreads() still holds
// its own value, and one that reloads it gets its own value again.
inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
constexpr int warpSize = 32;

// ---------------------------------------------------------------------------
// 3. Math and bit intrinsics.  The fast-math variants (__expf ...) are exact
//    here; tests should use tolerances that hold on the GPU.  glibc's
//    <math.h> already declares __expf & co. as internal functions it does not
//    export, so these must be macros rather than functions.
// ---------------------------------------------------------------------------
#define __expf(x) expf(x)
#define __exp10f(x) exp10f(x)
#define __logf(x) logf(x)
#define __log2f(x) log2f(x)
#define __log10f(x) log10f(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __tanf(x) tanf(x)
#define __sincosf(x, s, c) sincosf((x), (s), (c))
#define __powf(x, y) powf((x), (y))
#define __fdividef(x, y) ((float)(x) / (float)(y))
#define __fsqrt_rn(x) sqrtf(x)
#define __frcp_rn(x) (1.0f / (float)(x))
#define __fadd_rn(x, y) ((float)(x) + (float)(y))
#define __fsub_rn(x, y) ((float)(x) - (float)(y))
#define __fmul_rn(x, y) ((float)(x) * (float)(y))
#define __fdiv_rn(x, y) ((float)(x) / (float)(y))
#define __fmaf_rn(x, y, z) fmaf((x), (y), (z))

inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; }  // NaN -> 0

inline float __int_as_float(int v) { return __builtin_bit_cast(float, v); }
inline int __float_as_int(float v) { return __builtin_bit_cast(int, v); }
inline float __uint_as_float(unsigned v) { return __builtin_bit_cast(float, v); }
inline unsigned __float_as_uint(float v) { return __builtin_bit_cast(unsigned, v); }
inline double __longlong_as_double(long long v) { return __builtin_bit_cast(double, v); }
inline long long __double_as_longlong(double v) { return __builtin_bit_cast(long long, v); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)floorf(x); }
inline int __float2int_ru(float x) { return (int)ceilf(x); }
inline float __int2float_rn(int x) { return (float)x; }

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}
inline int __mul24(int a, int b) { return a * b; }
inline unsigned __umul24(unsigned a, unsigned b) { return a * b; }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }

// CUDA's min/max are overloaded for every arithmetic type, with the usual
// arithmetic conversions (min(int, unsigned) is unsigned).  A template over
// the common type reproduces that; floating point goes through fmin/fmax so
// NaN handling matches fminf/fmaxf.
template <class A, class B>
    requires std::is_arithmetic_v<A> && std::is_arithmetic_v<B>
inline std::common_type_t<A, B> min(A a, B b) {
    using T = std::common_type_t<A, B>;
    if constexpr (std::is_floating_point_v<T>) return fmin((T)a, (T)b);
    else return (T)b < (T)a ? (T)b : (T)a;
}
template <class A, class B>
    requires std::is_arithmetic_v<A> && std::is_arithmetic_v<B>
inline std::common_type_t<A, B> max(A a, B b) {
    using T = std::common_type_t<A, B>;
    if constexpr (std::is_floating_point_v<T>) return fmax((T)a, (T)b);
    else return (T)a < (T)b ? (T)b : (T)a;
}

template <class T> inline T __ldg(const T* p) { return *p; }

// ---------------------------------------------------------------------------
// 4. Atomics and fences.  Fibers switch only inside the scheduler's
//    primitives, never in the middle of these functions, so a plain
//    read-modify-write is already atomic.  The second parameter is not
//    deduced, so atomicAdd(&float_var, 1) converts like the CUDA overloads.
// ---------------------------------------------------------------------------
template <class T> using emu_same = std::type_identity_t<T>;
template <class T> inline T atomicAdd(T* p, emu_same<T> v) { T old = *p; *p = old + v; return old; }
template <class T> inline T atomicSub(T* p, emu_same<T> v) { T old = *p; *p = old - v; return old; }
template <class T> inline T atomicExch(T* p, emu_same<T> v) { T old = *p; *p = v; return old; }
template <class T> inline T atomicMin(T* p, emu_same<T> v) { T old = *p; *p = v < old ? v : old; return old; }
template <class T> inline T atomicMax(T* p, emu_same<T> v) { T old = *p; *p = old < v ? v : old; return old; }
template <class T> inline T atomicAnd(T* p, emu_same<T> v) { T old = *p; *p = old & v; return old; }
template <class T> inline T atomicOr(T* p, emu_same<T> v) { T old = *p; *p = old | v; return old; }
template <class T> inline T atomicXor(T* p, emu_same<T> v) { T old = *p; *p = old ^ v; return old; }
template <class T> inline T atomicCAS(T* p, emu_same<T> expected, emu_same<T> v) {
    T old = *p;
    if (old == expected) *p = v;
    return old;
}
inline unsigned atomicInc(unsigned* p, unsigned limit) {
    unsigned old = *p;
    *p = old >= limit ? 0 : old + 1;
    return old;
}

// One OS thread: a compiler barrier is all the ordering there is to enforce.
inline void __threadfence() { asm volatile("" ::: "memory"); }
inline void __threadfence_block() { asm volatile("" ::: "memory"); }
inline void __threadfence_system() { asm volatile("" ::: "memory"); }

// ---------------------------------------------------------------------------
// 5. The launcher's view: structures shared with emu.py (ctypes mirrors them
//    field for field - change both together).
// ---------------------------------------------------------------------------
struct EmuLaunch {
    void** args;                // args[i] points at the value of parameter i
    uint32_t grid[3], block[3];
    uint64_t dyn_shared_bytes;  // the launch's dynamic shared memory
    uint64_t stack_bytes;       // per-fiber stack
    int32_t catch_signals;      // 1 in the throwaway child process
};

enum : int32_t { EMU_OK = 0, EMU_ERROR = 1, EMU_CRASH = 2 };
enum : int32_t { EMU_FAULT_UNKNOWN = 0, EMU_FAULT_STACK = 1, EMU_FAULT_SHARED = 2 };

struct EmuStatus {
    int32_t code;        // EMU_OK / EMU_ERROR (msg says why) / EMU_CRASH (signal)
    int32_t signo;
    int32_t fault_kind;  // EMU_FAULT_*; emu.py matches other addresses to arguments
    int32_t in_thread;   // 1 if a CUDA thread was running (thread[] is valid)
    uint64_t fault_addr;
    int64_t fault_offset;  // EMU_FAULT_SHARED: byte offset into dynamic shared memory
    uint32_t block[3], thread[3];
    uint64_t resumes;    // fiber switches, for speed measurements
    uint64_t blocks;
    char msg[4096];
};

// Parameter descriptions, so emu.py checks argument kinds against what the
// compiler saw instead of trusting its own parsing of the declaration.
enum : int32_t { EMU_KIND_OTHER = 0, EMU_KIND_SINT = 1, EMU_KIND_UINT = 2, EMU_KIND_FLOAT = 3,
                 EMU_KIND_BOOL = 4, EMU_KIND_VOID = 5 };
struct EmuParamInfo {
    int32_t is_pointer, is_const;  // is_const: pointee is const
    int32_t kind, size, lanes;     // of the scalar, or of the pointee element
};

namespace emu {

// ---------------------------------------------------------------------------
// 6. Context switching.
// ---------------------------------------------------------------------------
#if EMU_UCONTEXT
struct Context { ucontext_t uc; };
inline void ctx_switch(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }
inline void ctx_make(Context* c, char* stack, size_t size, void (*entry)()) {
    getcontext(&c->uc);
    c->uc.uc_stack.ss_sp = stack;
    c->uc.uc_stack.ss_size = size;
    c->uc.uc_link = nullptr;  // the entry function never returns
    makecontext(&c->uc, entry, 0);
}
#else
// emu_swap_context(&save_sp, new_sp): push the callee-saved registers, store
// the stack pointer, load the other one, pop its registers, return into it.
// Everything else is caller-saved, so the C++ compiler already spilled it.
asm(R"(
    .pushsection .text
    .p2align 4
    .hidden emu_swap_context
    .type emu_swap_context, @function
emu_swap_context:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size emu_swap_context, .-emu_swap_context
    .popsection
)");
extern "C" void emu_swap_context(void** save_sp, void* new_sp);
struct Context { void* sp; };
inline void ctx_switch(Context* from, Context* to) { emu_swap_context(&from->sp, to->sp); }
// A new fiber's stack looks as if it had called emu_swap_context: six zero
// registers, then a return address pointing at `entry`.  The slot above is
// entry's own (never used) return address; it sits at 8 mod 16 so that entry
// starts with the stack alignment the ABI promises.
inline void ctx_make(Context* c, char* stack, size_t size, void (*entry)()) {
    void** sp = (void**)(((uintptr_t)stack + size) & ~(uintptr_t)15);
    *--sp = nullptr;
    *--sp = (void*)entry;
    for (int i = 0; i < 6; ++i) *--sp = nullptr;
    c->sp = sp;
}
#endif

// ---------------------------------------------------------------------------
// 7. Fibers and the scheduler.
// ---------------------------------------------------------------------------
enum class St : uint8_t { Runnable, AtBarrier, AtWarpOp, Done };
enum Op : uint8_t { SyncThreads, SyncCount, SyncAnd, SyncOr,  // block-wide
                    Shfl, ShflUp, ShflDown, ShflXor, SyncWarp, Ballot, Any, All };  // warp
inline const char* const kOpName[] = {
    "__syncthreads", "__syncthreads_count", "__syncthreads_and", "__syncthreads_or",
    "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
    "__syncwarp", "__ballot_sync", "__any_sync", "__all_sync"};

struct Fiber {
    Context ctx;
    uint3 tid;
    int lin;           // linear thread id; warp = lin / 32, lane = lin % 32
    St state;
    Op op;             // what it waits at (AtBarrier / AtWarpOp)
    unsigned mask;     // warp ops: the member mask it passed
    int src;           // shuffles: lane to read, -1 = keep own value
    int pred;          // vote / __syncthreads_count predicate
    uint64_t value;    // shuffles: the value this lane offers
    uint64_t result;   // filled in by the scheduler on release
    unsigned line, column;  // call site, for barrier matching and messages
};

struct State {
    void (*call)(void**);
    void** args;
    EmuStatus* status;
    Fiber* fibers;
    int n;                   // threads per block
    Context sched;           // the scheduler's (main stack's) context
    Fiber* cur;              // running fiber, nullptr while the scheduler runs
    bool failed;
    jmp_buf abort;           // where a failed launch unwinds to
    char* stacks;            // all fiber stacks, each preceded by a guard page
    size_t stack_stride, page;
    char* dyn;               // dynamic shared memory (ends at a guard page)
    size_t dyn_bytes;
    char *dyn_lo, *dyn_hi;   // mapping incl. guard pages, for fault reports
    uint64_t resumes;
};
inline State g;

// Stop the launch with a message.  From a fiber we switch to the scheduler
// and never come back (the fiber is abandoned with its stack); the scheduler
// then unwinds to emu_launch via longjmp on its own stack.
[[noreturn]] inline void fail(const char* fmt, ...) {
    EmuStatus* st = g.status;
    if (!g.failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(st->msg, sizeof st->msg, fmt, ap);
        va_end(ap);
        st->code = EMU_ERROR;
        st->block[0] = blockIdx.x, st->block[1] = blockIdx.y, st->block[2] = blockIdx.z;
        if (g.cur) {
            st->in_thread = 1;
            st->thread[0] = g.cur->tid.x, st->thread[1] = g.cur->tid.y, st->thread[2] = g.cur->tid.z;
        }
    }
    g.failed = true;
    if (g.cur) ctx_switch(&g.cur->ctx, &g.sched);
    longjmp(g.abort, 1);
}

// Every fiber runs this loop for the whole launch: one kernel call per block.
// Reusing fibers (and their stacks) across blocks means a launch creates
// blockDim fibers once, not blockDim x gridDim.
inline void fiber_main() {
    for (;;) {
        g.call(g.args);
        g.cur->state = St::Done;
        ctx_switch(&g.cur->ctx, &g.sched);
    }
}

inline void resume(Fiber* f) {
    g.cur = f;
    threadIdx = f->tid;
    ++g.resumes;
    ctx_switch(&g.sched, &f->ctx);
    g.cur = nullptr;
    if (g.failed) longjmp(g.abort, 1);
}

// Called on a fiber: record what we wait for and hand control back.
inline uint64_t wait_at(St state, Op op, unsigned mask, uint64_t value, int src, int pred,
                        const std::source_location& loc) {
    Fiber* f = g.cur;
    f->state = state;
    f->op = op;
    f->mask = mask;
    f->value = value;
    f->src = src;
    f->pred = pred;
    f->line = loc.line();
    f->column = loc.column();
    ctx_switch(&f->ctx, &g.sched);
    return f->result;
}

inline uint64_t warp_op(Op op, unsigned mask, uint64_t value, int src, int pred,
                        const std::source_location& loc) {
    int lane = g.cur->lin % 32;
    if (!((mask >> lane) & 1u))
        fail("%s on line %u: the calling thread (lane %d) is not in its own mask 0x%08x", kOpName[op],
             loc.line(), lane, mask);
    return wait_at(St::AtWarpOp, op, mask, value, src, pred, loc);
}

// snprintf that appends and never overflows (a long message is cut short).
inline void append(char* buf, size_t cap, const char* fmt, ...) {
    size_t len = strlen(buf);
    if (len + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, cap - len, fmt, ap);
    va_end(ap);
}

inline bool same_wait(const Fiber& a, const Fiber& b) {
    return a.state == b.state && a.op == b.op && a.line == b.line && a.column == b.column &&
           (a.state != St::AtWarpOp || a.mask == b.mask);
}

// Lists the live fibers grouped by where they wait, one line per group:
//   threads 0-31 64-95 (64) wait at __syncthreads() on line 9
// (linear thread ids: threadIdx.x + threadIdx.y*blockDim.x + ...).
inline void append_waiters(char* buf, size_t cap) {
    const Fiber* F = g.fibers;
    bool listed[1024] = {};
    int groups = 0;
    for (int i = 0; i < g.n; ++i) {
        if (listed[i] || F[i].state == St::Done) continue;
        if (++groups > 8) { append(buf, cap, "\n  ..."); break; }
        append(buf, cap, "\n  threads");
        int count = 0, ranges = 0;
        for (int j = i; j < g.n; ++j) {
            if (listed[j] || !same_wait(F[i], F[j])) continue;
            int end = j;
            while (end + 1 < g.n && !listed[end + 1] && same_wait(F[i], F[end + 1])) ++end;
            for (int m = j; m <= end; ++m) listed[m] = true;
            count += end - j + 1;
            if (++ranges <= 6) append(buf, cap, end > j ? " %d-%d" : " %d", j, end);
            j = end;
        }
        if (ranges > 6) append(buf, cap, " ...");
        append(buf, cap, " (%d) wait at %s(", count, kOpName[F[i].op]);
        if (F[i].state == St::AtWarpOp) append(buf, cap, "mask 0x%08x", F[i].mask);
        append(buf, cap, ") on line %u", F[i].line);
    }
}

[[noreturn]] inline void deadlock(const char* headline) {
    char buf[3000];
    snprintf(buf, sizeof buf, "%s\nIn block (%u,%u,%u) no thread can continue:", headline, blockIdx.x,
             blockIdx.y, blockIdx.z);
    append_waiters(buf, sizeof buf);
    fail("%s\nEvery thread of a block that has not exited must reach the same __syncthreads() call, "
         "and a warp primitive must be reached by every live lane named in its mask.", buf);
}

// Performs every warp operation whose whole group has arrived.  The group of
// a waiting lane is the set of live lanes in its mask: lanes that exited (or
// do not exist because blockDim is not a multiple of 32) are not waited for,
// as on Volta and later GPUs - but reading a value from one is an error.
inline bool release_warp_ops() {
    bool released = false;
    for (int first = 0; first < g.n; first += 32) {
        Fiber* L = g.fibers + first;
        int count = g.n - first < 32 ? g.n - first : 32;
        unsigned handled = 0;
        for (int l = 0; l < count; ++l) {
            if (L[l].state != St::AtWarpOp || ((handled >> l) & 1u)) continue;
            const unsigned mask = L[l].mask;
            const Op op = L[l].op;
            unsigned live = 0, ready = 0;
            for (int m = 0; m < count; ++m) {
                if (!((mask >> m) & 1u) || L[m].state == St::Done) continue;
                live |= 1u << m;
                if (L[m].state == St::AtWarpOp) ready |= 1u << m;
            }
            if (ready != live) continue;  // some lane is still elsewhere
            for (int m = 0; m < count; ++m) {
                if (((live >> m) & 1u) && (L[m].op != op || L[m].mask != mask)) {
                    fail("warp %d of block (%u,%u,%u): lanes disagree: lane %d is at %s(mask 0x%08x) on "
                         "line %u but lane %d is at %s(mask 0x%08x) on line %u",
                         first / 32, blockIdx.x, blockIdx.y, blockIdx.z, l, kOpName[op], mask, L[l].line,
                         m, kOpName[L[m].op], L[m].mask, L[m].line);
                }
            }
            unsigned votes = 0;
            for (int m = 0; m < count; ++m)
                if (((live >> m) & 1u) && L[m].pred) votes |= 1u << m;
            for (int m = 0; m < count; ++m) {
                if (!((live >> m) & 1u)) continue;
                Fiber& f = L[m];
                switch (op) {
                case Shfl: case ShflUp: case ShflDown: case ShflXor: {
                    int s = f.src;
                    if (s < 0) { f.result = f.value; break; }
                    if (s >= count || !((live >> s) & 1u)) {
                        const char* why = s >= count ? "does not exist (blockDim is not a multiple of 32)"
                                        : !((mask >> s) & 1u) ? "is not in the mask"
                                                              : "has already exited";
                        fail("%s(mask 0x%08x) on line %u in block (%u,%u,%u): lane %d of warp %d reads "
                             "lane %d, which %s; the value would be undefined on a GPU",
                             kOpName[op], mask, f.line, blockIdx.x, blockIdx.y, blockIdx.z, m, first / 32,
                             s, why);
                    }
                    f.result = L[s].value;
                    break;
                }
                case Ballot: f.result = votes; break;
                case Any: f.result = votes != 0; break;
                case All: f.result = votes == live; break;
                default: f.result = 0; break;
                }
            }
            for (int m = 0; m < count; ++m)
                if ((live >> m) & 1u) L[m].state = St::Runnable;
            handled |= live;
            released = true;
        }
    }
    return released;
}

// All live fibers wait at a block barrier: it must be the same call site.
// (CUDA calls a __syncthreads() in divergent code undefined; real hardware
// may count arrivals at different call sites together, which hides bugs.)
inline void release_barrier() {
    Fiber* F = g.fibers;
    const Fiber* first = nullptr;
    int count = 0, live = 0;
    for (int i = 0; i < g.n; ++i) {
        if (F[i].state == St::Done) continue;
        ++live;
        if (!first) first = &F[i];
        if (F[i].op != first->op || F[i].line != first->line || F[i].column != first->column)
            deadlock("barrier divergence: threads wait at different __syncthreads() calls (undefined "
                     "behaviour in CUDA: a GPU may hang or synchronise the wrong threads)");
        count += F[i].pred != 0;
    }
    uint64_t result = first->op == SyncCount ? (uint64_t)count
                    : first->op == SyncAnd   ? (uint64_t)(count == live)
                    : first->op == SyncOr    ? (uint64_t)(count > 0)
                                             : 0;
    for (int i = 0; i < g.n; ++i)
        if (F[i].state != St::Done) F[i].state = St::Runnable, F[i].result = result;
}

// Run the current block to completion.  Each round resumes every runnable
// fiber until it blocks; then at most one kind of release can apply.
inline void run_block() {
    Fiber* F = g.fibers;
    for (int i = 0; i < g.n; ++i) F[i].state = St::Runnable;
    for (;;) {
        for (int i = 0; i < g.n; ++i)
            if (F[i].state == St::Runnable) resume(&F[i]);
        int live = 0, at_barrier = 0, at_warp = 0;
        for (int i = 0; i < g.n; ++i) {
            live += F[i].state != St::Done;
            at_barrier += F[i].state == St::AtBarrier;
            at_warp += F[i].state == St::AtWarpOp;
        }
        if (live == 0) return;
        if (at_warp && release_warp_ops()) continue;
        if (at_barrier == live) { release_barrier(); continue; }
        deadlock("deadlock: every live thread waits, and no barrier or warp operation can complete");
    }
}

inline void on_fatal_signal(int sig, siginfo_t* si, void*) {
    // Only plain stores and _exit: we are in a signal handler, possibly on
    // a fiber whose stack just overflowed (this runs on an alternate stack).
    EmuStatus* st = g.status;
    uintptr_t a = (uintptr_t)si->si_addr;
    st->code = EMU_CRASH;
    st->signo = sig;
    st->fault_addr = a;
    st->block[0] = blockIdx.x, st->block[1] = blockIdx.y, st->block[2] = blockIdx.z;
    if (g.cur) {
        st->in_thread = 1;
        st->thread[0] = g.cur->tid.x, st->thread[1] = g.cur->tid.y, st->thread[2] = g.cur->tid.z;
    }
    uintptr_t s0 = (uintptr_t)g.stacks, s1 = s0 + g.stack_stride * g.n;
    if (a >= s0 && a < s1 && (a - s0) % g.stack_stride < g.page) st->fault_kind = EMU_FAULT_STACK;
    else if (a >= (uintptr_t)g.dyn_lo && a < (uintptr_t)g.dyn_hi) {
        st->fault_kind = EMU_FAULT_SHARED;
        st->fault_offset = (int64_t)(a - (uintptr_t)g.dyn);
    }
    st->resumes = g.resumes;
    _exit(3);
}

inline void install_signal_handlers() {
    static char altstack[1 << 16];
    stack_t ss = {};
    ss.ss_sp = altstack;
    ss.ss_size = sizeof altstack;
    sigaltstack(&ss, nullptr);
    struct sigaction sa = {};
    sa.sa_sigaction = on_fatal_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL}) sigaction(sig, &sa, nullptr);
}

// An anonymous mapping of `bytes` usable bytes that ends right at a
// PROT_NONE page, so running off the end faults.  Returns the start of the
// usable range; it is 16-byte aligned (the usable size is rounded up to 16).
inline char* map_guarded(size_t bytes, char** lo, char** hi) {
    size_t page = g.page;
    size_t body = ((bytes + 15) / 16 * 16 + page - 1) / page * page;
    if (body == 0) body = page;
    char* base = (char*)mmap(nullptr, body + 2 * page, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) fail("out of memory mapping %zu bytes", bytes);
    mprotect(base, page, PROT_NONE);
    mprotect(base + page + body, page, PROT_NONE);
    *lo = base;
    *hi = base + body + 2 * page;
    return base + page + body - (bytes + 15) / 16 * 16;
}

// All __shared__ variables of the source; emu.py prefers a per-kernel count
// from `nm` and falls back to this one.
extern "C" EMU_EXPORT long emu_static_shared_total() {
    return __start_emu_shared ? (long)(__stop_emu_shared - __start_emu_shared) : 0;
}

// `extern __shared__ T name[];` is rewritten by emu.py into
// `T* const& name = reinterpret_cast<T* const&>(emu::dyn_smem_ptr);`
// - a reference, so it also works at file scope and always sees the current
// launch's buffer.  (Reading a void* through a T* is fine with
// -fno-strict-aliasing, which emu.py passes.)
inline void* dyn_smem_ptr = nullptr;

// Usually the child process exits right after the launch anyway; this
// matters for isolate=False (debugging) runs that launch many times.
inline void release_memory() {
    if (g.stacks && g.stacks != MAP_FAILED) munmap(g.stacks, g.stack_stride * g.n);
    if (g.dyn_lo) munmap(g.dyn_lo, (size_t)(g.dyn_hi - g.dyn_lo));
    free(g.fibers);
    g.stacks = g.dyn = g.dyn_lo = g.dyn_hi = nullptr;
    g.fibers = nullptr;
}

inline int launch_impl(void (*call)(void**), const EmuLaunch* L, EmuStatus* st) {
    memset(st, 0, sizeof *st);
    g = State{};
    g.call = call;
    g.args = L->args;
    g.status = st;
    g.page = (size_t)sysconf(_SC_PAGESIZE);
    if (setjmp(g.abort)) {
        st->resumes = g.resumes;
        fflush(stdout);
        release_memory();
        return 1;
    }
    blockDim = dim3(L->block[0], L->block[1], L->block[2]);
    gridDim = dim3(L->grid[0], L->grid[1], L->grid[2]);
    g.n = (int)(blockDim.x * blockDim.y * blockDim.z);
    if (g.n < 1 || g.n > 1024) fail("invalid block size %d", g.n);

    // Fiber stacks: [guard][stack][guard][stack]...  The guard page below
    // each stack turns an overflow into a SIGSEGV we can name.
    size_t stack = (L->stack_bytes + g.page - 1) / g.page * g.page;
    if (stack < 16384) stack = 16384;
    g.stack_stride = stack + g.page;
    g.stacks = (char*)mmap(nullptr, g.stack_stride * g.n, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    g.fibers = (Fiber*)calloc(g.n, sizeof(Fiber));
    if (g.stacks == MAP_FAILED || !g.fibers) fail("out of memory creating %d fibers", g.n);
    for (int i = 0; i < g.n; ++i) {
        char* guard = g.stacks + i * g.stack_stride;
        mprotect(guard, g.page, PROT_NONE);
        Fiber& f = g.fibers[i];
        f.lin = i;
        f.tid = uint3{(unsigned)i % blockDim.x, (unsigned)i / blockDim.x % blockDim.y,
                      (unsigned)i / (blockDim.x * blockDim.y)};
        ctx_make(&f.ctx, guard + g.page, stack, fiber_main);
    }

    g.dyn_bytes = L->dyn_shared_bytes;
    g.dyn = map_guarded(g.dyn_bytes, &g.dyn_lo, &g.dyn_hi);
    dyn_smem_ptr = g.dyn;
    size_t static_bytes = __start_emu_shared ? (size_t)(__stop_emu_shared - __start_emu_shared) : 0;

    if (L->catch_signals) install_signal_handlers();

    for (unsigned z = 0; z < gridDim.z; ++z)
        for (unsigned y = 0; y < gridDim.y; ++y)
            for (unsigned x = 0; x < gridDim.x; ++x) {
                blockIdx = uint3{x, y, z};
                // 0xFF bytes: a NaN in every float, -1 in every int.
                memset(g.dyn, 0xFF, g.dyn_bytes);
                if (static_bytes) memset(__start_emu_shared, 0xFF, static_bytes);
                run_block();
                ++st->blocks;
            }
    st->resumes = g.resumes;
    fflush(stdout);
    release_memory();
    return 0;
}

// Turns a kernel `void k(P...)` into `void call(void** args)`.  P are the
// parameter types as the compiler sees them, so no C++ type is ever parsed
// from the source text.
template <class... P> struct Invoker {
    static inline void (*fn)(P...) = nullptr;
    template <size_t... I> static void unpack(void** a, std::index_sequence<I...>) {
        (void)a;
        fn(*static_cast<P*>(a[I])...);
    }
    static void call(void** a) { unpack(a, std::index_sequence_for<P...>{}); }
};

template <class... P> int launch(void (*k)(P...), const EmuLaunch* l, EmuStatus* st) {
    Invoker<P...>::fn = k;
    return launch_impl(&Invoker<P...>::call, l, st);
}

template <class T> struct VecTraits { using elem = T; static constexpr int lanes = 1; };
#define EMU_VEC(V, E, N) template <> struct VecTraits<V> { using elem = E; static constexpr int lanes = N; }
EMU_VEC(float2, float, 2); EMU_VEC(float3, float, 3); EMU_VEC(float4, float, 4);
EMU_VEC(int2, int, 2); EMU_VEC(int3, int, 3); EMU_VEC(int4, int, 4);
EMU_VEC(uint2, unsigned, 2); EMU_VEC(uint3, unsigned, 3); EMU_VEC(uint4, unsigned, 4);
EMU_VEC(double2, double, 2);
#undef EMU_VEC

template <class T> constexpr EmuParamInfo describe_type(int is_pointer, int is_const) {
    using E = typename VecTraits<T>::elem;
    EmuParamInfo p{is_pointer, is_const, EMU_KIND_OTHER, 0, VecTraits<T>::lanes};
    if constexpr (std::is_void_v<E>) p.kind = EMU_KIND_VOID;
    else {
        p.size = (int32_t)sizeof(E);
        if constexpr (std::is_same_v<E, bool>) p.kind = EMU_KIND_BOOL;
        else if constexpr (std::is_floating_point_v<E>) p.kind = EMU_KIND_FLOAT;
        else if constexpr (std::is_integral_v<E>) p.kind = std::is_signed_v<E> ? EMU_KIND_SINT : EMU_KIND_UINT;
    }
    return p;
}

template <class P> constexpr EmuParamInfo describe_param() {
    if constexpr (std::is_pointer_v<P>) {
        using U = std::remove_pointer_t<P>;
        if constexpr (std::is_pointer_v<U>) return EmuParamInfo{1, 0, EMU_KIND_OTHER, (int32_t)sizeof(U), 1};
        else return describe_type<std::remove_cv_t<U>>(1, std::is_const_v<U>);
    } else {
        return describe_type<P>(0, 0);
    }
}

template <class... P> int describe(void (*)(P...), EmuParamInfo* out, int cap) {
    const EmuParamInfo all[] = {describe_param<P>()..., EmuParamInfo{}};
    for (int i = 0; i < (int)sizeof...(P) && i < cap; ++i) out[i] = all[i];
    return (int)sizeof...(P);
}

template <class T> inline T shuffle(Op op, unsigned mask, T var, int arg, int width,
                                    const std::source_location& loc) {
    static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8,
                  "warp shuffles move 8 bytes at most; shuffle the fields of larger types one by one");
    if (width < 1 || width > 32 || (width & (width - 1)))
        fail("%s on line %u: width %d is not a power of two between 1 and 32", kOpName[op], loc.line(), width);
    // Which lane to read, following the CUDA programming guide: lanes are
    // split into segments of `width`; reads that would leave the segment
    // return the caller's own value (src = -1).
    int lane = g.cur->lin % 32;
    int base = lane & ~(width - 1);
    int src = -1;
    switch (op) {
    case Shfl: src = base + (arg & (width - 1)); break;
    case ShflUp: src = (unsigned)(lane - base) >= (unsigned)arg ? lane - arg : -1; break;
    case ShflDown: src = (unsigned)(lane - base) + (unsigned)arg < (unsigned)width ? lane + arg : -1; break;
    case ShflXor: src = (unsigned)(lane ^ arg) < (unsigned)(base + width) ? lane ^ arg : -1; break;
    default: break;
    }
    uint64_t bits = 0;
    memcpy(&bits, &var, sizeof(T));
    bits = warp_op(op, mask, bits, src, 0, loc);
    T out;
    memcpy(&out, &bits, sizeof(T));
    return out;
}

}  // namespace emu

// ---------------------------------------------------------------------------
// 8. Synchronisation and warp intrinsics with their CUDA names.  The
//    defaulted source_location records each call site: barriers are matched
//    by it and error messages quote its line in the kernel source.
// ---------------------------------------------------------------------------
using emu_loc = std::source_location;

inline void __syncthreads(emu_loc loc = emu_loc::current()) {
    emu::wait_at(emu::St::AtBarrier, emu::SyncThreads, 0, 0, -1, 0, loc);
}
inline int __syncthreads_count(int pred, emu_loc loc = emu_loc::current()) {
    return (int)emu::wait_at(emu::St::AtBarrier, emu::SyncCount, 0, 0, -1, pred != 0, loc);
}
inline int __syncthreads_and(int pred, emu_loc loc = emu_loc::current()) {
    return (int)emu::wait_at(emu::St::AtBarrier, emu::SyncAnd, 0, 0, -1, pred != 0, loc);
}
inline int __syncthreads_or(int pred, emu_loc loc = emu_loc::current()) {
    return (int)emu::wait_at(emu::St::AtBarrier, emu::SyncOr, 0, 0, -1, pred != 0, loc);
}
inline void __syncwarp(unsigned mask = 0xffffffffu, emu_loc loc = emu_loc::current()) {
    emu::warp_op(emu::SyncWarp, mask, 0, -1, 0, loc);
}
inline unsigned __ballot_sync(unsigned mask, int pred, emu_loc loc = emu_loc::current()) {
    return (unsigned)emu::warp_op(emu::Ballot, mask, 0, -1, pred != 0, loc);
}
inline int __any_sync(unsigned mask, int pred, emu_loc loc = emu_loc::current()) {
    return (int)emu::warp_op(emu::Any, mask, 0, -1, pred != 0, loc);
}
inline int __all_sync(unsigned mask, int pred, emu_loc loc = emu_loc::current()) {
    return (int)emu::warp_op(emu::All, mask, 0, -1, pred != 0, loc);
}
template <class T>
inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize, emu_loc loc = emu_loc::current()) {
    return emu::shuffle(emu::Shfl, mask, var, srcLane, width, loc);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                        emu_loc loc = emu_loc::current()) {
    return emu::shuffle(emu::ShflUp, mask, var, (int)delta, width, loc);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                          emu_loc loc = emu_loc::current()) {
    return emu::shuffle(emu::ShflDown, mask, var, (int)delta, width, loc);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize,
                         emu_loc loc = emu_loc::current()) {
    return emu::shuffle(emu::ShflXor, mask, var, laneMask, width, loc);
}

[[noreturn]] inline void __trap(emu_loc loc = emu_loc::current()) {
    emu::fail("__trap() called on line %u", loc.line());
}
inline void __emu_assert_fail(const char* expr, emu_loc loc) {
    emu::fail("assertion `%s` failed on line %u", expr, loc.line());
}
#undef assert
#define assert(e) ((e) ? (void)0 : __emu_assert_fail(#e, emu_loc::current()))
