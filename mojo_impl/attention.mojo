# attention: causal scaled dot-product self-attention, per (batch, head), from q, k, v of
# shape (batch, heads, time, head_dim), float32, row-major:
#
#     S[i, j] = q[i] . k[j] / sqrt(head_dim)      for j <= i (key j is visible to query i)
#     out[i]  = sum_j softmax(S[i, :])[j] v[j]
#     lse[i]  = log sum_j exp(S[i, j])             (natural log; the backward needs it)
#
# and its backward, from the saved out and lse and the upstream gradient dout, with
# P[i, j] = exp(S[i, j] - lse[i]) recomputed and D[i] = dout[i] . out[i]:
#
#     dv[j] = sum_i P[i, j] dout[i]
#     dS    = P * (dout v^T - D)                   (the softmax backward, row by row)
#     dq[i] = sum_j dS[i, j] k[j] / sqrt(d),       dk[j] = sum_i dS[i, j] q[i] / sqrt(d)
#
# Variants (naive first), each registered as attention_<variant>:
#   naive      per (batch, head) and query row i: the row's scores S[i, 0..i] materialised
#              in a buffer (one dot product each, scalar loops), their max, exp(S - max)
#              and its sum, then out[i] = sum_j e_j v[j] / sum, and lse = max + log(sum).
#              Every q.k and every P.v is a scalar multiply-add.
#   parallel   naive's algorithm unchanged, with the head_dim loops (the q.k dot products
#              and the P.v row updates) on F32_WIDTH-lane FMAs with a masked tail, and the
#              (batch x head, query row) rows dealt round-robin over the worker threads
#              (row i costs i + 1 keys: dealing them out keeps the causal triangle's work
#              even). Still a dot product per score, each ending in a horizontal sum.
#   flash      FlashAttention on a CPU. Per (batch x head, block of BQ = 64 queries) unit,
#              keys and values stream through in blocks of BK = 64 with the online softmax
#              (running max m and sum l per query; when m grows, l and the accumulated
#              output are rescaled by exp(m_old - m_new)); the T x T matrix never exists,
#              only one BK x BQ tile of it, in L1. Both products are register-blocked
#              micro-kernels, as in matmul. The score tile is computed TRANSPOSED,
#              S^T = K_blk Q_blk^T: MR = 6 keys, each broadcast one float at a time,
#              against NV vectors of queries from a d x BQ copy of the query block made
#              once per unit, so every query owns a SIMD lane and the softmax over keys is
#              lane-wise vector work down the tile's rows, with no horizontal reduction.
#              The tile's epilogue, still on registers, applies the causal mask (diagonal
#              blocks only) and takes each query's block max (a separate pass over the
#              tile was a serial chain of dependent vmaxps: ~7 % of the time). P.V goes
#              into the unit's rows of out with a 6-query x NV-vector tile of head_dim in
#              registers (each loaded V vector serves 6 queries, each broadcast P serves
#              NV vectors), and that tile rescales its rows by exp(m_old - m_new) as it
#              loads them, instead of a separate pass over out per block. Key blocks wholly
#              above the diagonal are skipped (half of a causal row's work). Units are dealt
#              round-robin over the worker threads, so early (short) and late (long) query
#              blocks mix, and both threads work on the same head's K and V at a time.
#
# Backward variants, each registered as attention_backward_<variant>:
#   naive      per (batch, head), query rows in order: P's row recomputed into a buffer,
#              then dv[j] += P dout[i], dS = P (dout[i] . v[j] - D[i]), dq[i] += dS k[j]
#              and dk[j] += dS q[i], scalar loops. One thread, a fixed order: deterministic.
#   flash      no T x T buffer: per (batch, head), key blocks outer, query blocks inner,
#              P^T and dP^T recomputed one BK x BQ tile at a time from lse with the
#              forward's transposed score micro-kernel (q and dout transposed once per
#              head), dS^T = P^T (dP^T - D) lane-wise, then dv, dk (this key block's rows)
#              and dq (this query block's rows) accumulated by the forward's P.V
#              micro-kernel with other strides. The (batch, head) units are split over
#              the worker threads and a unit is the only writer of its dq, dk and dv rows,
#              each summed in a fixed order: deterministic, the same bits on every run and
#              with any number of workers.
#
# What to expect (2-core AVX-512 Sapphire Rapids VM, batch x heads = 32, T = 1024,
# head_dim = 64; the causal triangle is 4.3 GFLOP): naive ~4 GFLOP/s (at T = 256); parallel ~23
# (a dot product per score, each ending in a horizontal sum); flash ~110 GFLOP/s per
# core (38 core-ms per call, measured with another job on the machine), against torch's
# SDPA at ~100 GFLOP/s on both cores. Per 16 score entries flash issues ~128 vector FMAs
# and one vector exp, so the exps are cheap; what costs is feeding the FMAs, hence the
# register tiles. The backward recomputes both score tiles and runs three products per
# tile pair: ~2.5x the forward's FLOPs, at about the same rate.
#
# How Python calls them: attention_<variant>(block), one argument block (python_entry.mojo)
# whose slots follow the declaration (harness/primitives/attention.py): q, k, v, out, lse |
# batch, heads, time, head_dim, and q, k, v, out, lse, dout, dq, dk, dv | batch, heads,
# time, head_dim for the backward. (`out` is a Mojo keyword: the kernels call it o.)

from std.math import exp, iota, log, sqrt
from std.memory.alloc import unsafe_alloc
from std.os import abort
from std.python import PythonObject
from std.runtime import parallelism_level
from std.sys.intrinsics import masked_load, masked_store
from std.utils.numerics import neg_inf
from max.algorithm import parallelize

from python_entry import Args, F32Ptr, F32_WIDTH, add_variant, exp_or_zero, new_module

comptime Vec = SIMD[DType.float32, F32_WIDTH]
# Starting the worker threads costs 10 us when they are awake and up to ~500 us when the
# VM has parked them (measured on a 2-vCPU VM), and inside a training step they are
# usually parked: the call before was a one-thread one. Below this many multiply-adds of
# QK^T (as many again for PV; ~0.6 ms of work) a call stays on one thread. The default
# GPT's attention (batch x heads = 32, T = 64, d = 16: 2.1M) stays on one; the 10.8M
# model's (24, 256, 64: 50M) is split.
comptime MIN_PARALLEL_FMAS = 1 << 24

# The register tiles. AVX-512 has 32 vector registers: 6 x 4 accumulators + 4 loaded
# vectors + 1 broadcast = 29. AVX2 has 16: 6 x 2 + 2 + 1 = 15.
comptime NV = 4 if F32_WIDTH >= 16 else 2
comptime MR = 6
comptime QC = NV * F32_WIDTH                 # queries per score micro-tile: 64 with AVX-512
# Blocks: a BK x BQ score tile is 16 KB, and so is the d x BQ copy of the query block at
# d = 64; both stay in L1 while the unit's K and V rows stream through from L2.
comptime BQ = 64                             # a multiple of QC
comptime BK = 64


def first_lanes(count: Int) -> SIMD[DType.bool, F32_WIDTH]:
    """A mask of the first `count` lanes (none when count <= 0)."""
    return iota[DType.int32, F32_WIDTH]().lt(SIMD[DType.int32, F32_WIDTH](Int32(max(count, 0))))


def inv_sqrt(head_dim: Int) -> Float32:
    return Float32(1) / sqrt(Float32(head_dim))


# ----------------------------------------------------------------------------- naive

def attention_naive(q: F32Ptr, k: F32Ptr, v: F32Ptr, o: F32Ptr, lse: F32Ptr,
                    batch: Int, heads: Int, time: Int, head_dim: Int):
    var d = head_dim
    var scale = inv_sqrt(d)
    var s = unsafe_alloc[Float32](time).unsafe_origin_cast[MutAnyOrigin]()   # one row of scores
    for bh in range(batch * heads):
        var base = bh * time * d
        for i in range(time):
            var qi = q.unsafe_offset(base + i * d)
            var m = neg_inf[DType.float32]()
            for j in range(i + 1):                            # the causal mask: j <= i only
                var kj = k.unsafe_offset(base + j * d)
                var dot: Float32 = 0
                for p in range(d):
                    dot += qi[unsafe_offset=p] * kj[unsafe_offset=p]
                s[unsafe_offset=j] = dot * scale
                m = max(m, s[unsafe_offset=j])
            var l: Float32 = 0
            for j in range(i + 1):
                s[unsafe_offset=j] = exp(s[unsafe_offset=j] - m)
                l += s[unsafe_offset=j]
            var oi = o.unsafe_offset(base + i * d)
            for p in range(d):
                oi[unsafe_offset=p] = 0
            for j in range(i + 1):
                var vj = v.unsafe_offset(base + j * d)
                for p in range(d):
                    oi[unsafe_offset=p] += s[unsafe_offset=j] * vj[unsafe_offset=p]
            for p in range(d):
                oi[unsafe_offset=p] /= l
            lse[unsafe_offset=bh * time + i] = m + log(l)
    s.unsafe_free()


# ----------------------------------------------------------------------------- parallel

def dot(a: F32Ptr, b: F32Ptr, d: Int, tail: SIMD[DType.bool, F32_WIDTH]) -> Float32:
    var full = d - d % F32_WIDTH
    var acc = Vec(0)
    var p = 0
    while p < full:
        acc = a.unsafe_load[width=F32_WIDTH](p).fma(b.unsafe_load[width=F32_WIDTH](p), acc)
        p += F32_WIDTH
    if full < d:
        acc = masked_load[F32_WIDTH](a.unsafe_offset(full), tail, Vec(0)).fma(
            masked_load[F32_WIDTH](b.unsafe_offset(full), tail, Vec(0)), acc)
    return acc.reduce_add()


def axpy(y: F32Ptr, alpha: Float32, x: F32Ptr, d: Int, tail: SIMD[DType.bool, F32_WIDTH]):
    """Adds alpha * x[0:d] into y[0:d]."""
    var full = d - d % F32_WIDTH
    var a = Vec(alpha)
    var p = 0
    while p < full:
        y.unsafe_store[width=F32_WIDTH](p, a.fma(x.unsafe_load[width=F32_WIDTH](p), y.unsafe_load[width=F32_WIDTH](p)))
        p += F32_WIDTH
    if full < d:
        var yv = masked_load[F32_WIDTH](y.unsafe_offset(full), tail, Vec(0))
        var xv = masked_load[F32_WIDTH](x.unsafe_offset(full), tail, Vec(0))
        masked_store[F32_WIDTH](a.fma(xv, yv), y.unsafe_offset(full), tail)


def scale_vec(y: F32Ptr, alpha: Float32, d: Int, tail: SIMD[DType.bool, F32_WIDTH]):
    """Multiplies y[0:d] by alpha in place."""
    var full = d - d % F32_WIDTH
    var a = Vec(alpha)
    var p = 0
    while p < full:
        y.unsafe_store[width=F32_WIDTH](p, y.unsafe_load[width=F32_WIDTH](p) * a)
        p += F32_WIDTH
    if full < d:
        masked_store[F32_WIDTH](masked_load[F32_WIDTH](y.unsafe_offset(full), tail, Vec(0)) * a,
                                y.unsafe_offset(full), tail)


def attention_row(q: F32Ptr, k: F32Ptr, v: F32Ptr, o: F32Ptr, lse: F32Ptr, s: F32Ptr,
                  row: Int, time: Int, d: Int, scale: Float32):
    """Query row `row` of the flattened (batch x head x time) rows: naive's three steps,
    with the head_dim loops on vectors."""
    var bh = row // time
    var i = row % time
    var base = bh * time * d
    var tail = first_lanes(d % F32_WIDTH)
    var qi = q.unsafe_offset(base + i * d)
    var m = neg_inf[DType.float32]()
    for j in range(i + 1):
        s[unsafe_offset=j] = dot(qi, k.unsafe_offset(base + j * d), d, tail) * scale
        m = max(m, s[unsafe_offset=j])
    var l: Float32 = 0
    for j in range(i + 1):
        s[unsafe_offset=j] = exp(s[unsafe_offset=j] - m)
        l += s[unsafe_offset=j]
    var oi = o.unsafe_offset(base + i * d)
    for p in range(d):
        oi[unsafe_offset=p] = 0
    for j in range(i + 1):
        axpy(oi, s[unsafe_offset=j], v.unsafe_offset(base + j * d), d, tail)
    scale_vec(oi, 1 / l, d, tail)
    lse[unsafe_offset=row] = m + log(l)


def attention_parallel(q: F32Ptr, k: F32Ptr, v: F32Ptr, o: F32Ptr, lse: F32Ptr,
                       batch: Int, heads: Int, time: Int, head_dim: Int):
    var scale = inv_sqrt(head_dim)
    var rows = batch * heads * time
    var fmas = batch * heads * time * (time + 1) // 2 * head_dim
    var workers = min(parallelism_level(), rows) if fmas >= MIN_PARALLEL_FMAS else 1

    def work(w: Int) {var}:
        var s = unsafe_alloc[Float32](time).unsafe_origin_cast[MutAnyOrigin]()
        for row in range(w, rows, workers):           # round-robin: long and short rows mix
            attention_row(q, k, v, o, lse, s, row, time, head_dim, scale)
        s.unsafe_free()

    if workers > 1:
        parallelize(work, workers)
    else:
        work(0)


# ----------------------------------------------------------------------------- flash

def scores_tile[MASK: Bool, MAX: Bool](kr: F32Ptr, d: Int, qt: F32Ptr, ldq: Int, st: F32Ptr, rows: Int,
                                       scale: Float32, diag: Int, colmax: F32Ptr):
    """Scores st[r, 0:QC] = scale * sum_p kr[r, p] qt[p, 0:QC] for r < rows <= MR: MR keys
    (rows d floats apart, each broadcast one float at a time) against QC queries laid out
    as the columns of qt (rows ldq floats apart). st's rows are BQ floats apart. Rows past
    `rows` repeat the last real key (computed, never stored: no read outside k).
    With MASK, key r is in the future of query column c (-inf) when r > c + diag. With
    MAX, colmax[0:QC] takes the max of each query's new scores: done here, on registers,
    it costs MR - 1 vmaxps per vector instead of a pass over the tile whose max is one
    serial chain of dependent vmaxps per query vector."""
    var row = Array[F32Ptr, MR](fill=kr)
    comptime for r in range(MR):
        row[r] = kr.unsafe_offset(min(r, rows - 1) * d)
    var acc = Array[Vec, MR * NV](fill=Vec(0))
    for p in range(d):
        var qv = Array[Vec, NV](fill=Vec(0))
        comptime for c in range(NV):
            qv[c] = qt.unsafe_load[width=F32_WIDTH](p * ldq + c * F32_WIDTH)
        comptime for r in range(MR):
            var kb = Vec(row[r][unsafe_offset=p])
            comptime for c in range(NV):
                acc[r * NV + c] = kb.fma(qv[c], acc[r * NV + c])
    var sc = Vec(scale)
    comptime for r in range(MR):
        comptime for c in range(NV):
            acc[r * NV + c] = acc[r * NV + c] * sc
    comptime if MASK:
        var lanes = iota[DType.int32, F32_WIDTH]()
        comptime for r in range(MR):
            comptime for c in range(NV):
                var visible = (lanes + Int32(diag + c * F32_WIDTH - r)).ge(SIMD[DType.int32, F32_WIDTH](0))
                acc[r * NV + c] = visible.select(acc[r * NV + c], Vec(neg_inf[DType.float32]()))
    comptime if MAX:
        # The repeated rows past `rows` hold the last real key's scores (or fewer of
        # them, masked): they cannot change a max.
        comptime for c in range(NV):
            var mx = colmax.unsafe_load[width=F32_WIDTH](c * F32_WIDTH)
            comptime for r in range(MR):
                mx = max(mx, acc[r * NV + c])
            colmax.unsafe_store[width=F32_WIDTH](c * F32_WIDTH, mx)
    comptime for r in range(MR):
        if r < rows:
            comptime for c in range(NV):
                st.unsafe_store[width=F32_WIDTH](r * BQ + c * F32_WIDTH, acc[r * NV + c])


def scores_block[MASK: Bool, MAX: Bool](kr: F32Ptr, d: Int, qt: F32Ptr, ldq: Int, st: F32Ptr, kb: Int,
                                        scale: Float32, k0: Int, q0: Int, colmax: F32Ptr):
    """The kb x BQ tile st = scale * K_blk Q_blk^T (transposed scores: a row per key, keys
    from k0, queries from q0), masked with MASK, its column max into colmax with MAX."""
    for r0 in range(0, kb, MR):
        for c0 in range(0, BQ, QC):
            scores_tile[MASK, MAX](kr.unsafe_offset(r0 * d), d, qt.unsafe_offset(c0), ldq,
                                   st.unsafe_offset(r0 * BQ + c0), min(MR, kb - r0), scale,
                                   q0 + c0 - (k0 + r0), colmax.unsafe_offset(c0))


# How a P.V tile treats what C already holds: the flash forward's first key block
# overwrites (out arrives poisoned, and nothing has been added yet), later blocks first
# rescale each row by its exp(m_old - m_new) as they load it (free: the rows are loaded
# anyway, where a separate pass would read and write all of them once more per block),
# and the backward simply accumulates.
comptime OVERWRITE = 0
comptime RESCALE = 1
comptime ACCUMULATE = 2


def acc_tile[TM: Int, TV: Int, MODE: Int](
    a: F32Ptr, a_rs: Int, a_cs: Int, b: F32Ptr, ldb: Int, c: F32Ptr, ldc: Int, kdim: Int, rows: Int, cols: Int,
    alpha: F32Ptr,
):
    """Accumulates C[0:rows, 0:cols] (+)= A[0:rows, 0:kdim] @ B[0:kdim, 0:cols] with the
    TM x TV-vector tile of C in registers: A read through its strides (one float broadcast
    at a time), B's rows (ldb floats apart) loaded as vectors, lanes past `cols` masked.
    Rows past `rows` repeat the last real row (computed, never stored). With RESCALE, row
    r of C is multiplied by alpha[r] first."""
    var row = Array[F32Ptr, TM](fill=a)
    comptime for r in range(TM):
        row[r] = a.unsafe_offset(min(r, rows - 1) * a_rs)
    var mask = Array[SIMD[DType.bool, F32_WIDTH], TV](fill=SIMD[DType.bool, F32_WIDTH](fill=True))
    comptime for t in range(TV):
        mask[t] = first_lanes(cols - t * F32_WIDTH)
    var acc = Array[Vec, TM * TV](fill=Vec(0))
    comptime if MODE != OVERWRITE:
        comptime for r in range(TM):
            var rr = min(r, rows - 1)
            var cr = c.unsafe_offset(rr * ldc)
            comptime for t in range(TV):
                acc[r * TV + t] = masked_load[F32_WIDTH](cr.unsafe_offset(t * F32_WIDTH), mask[t], Vec(0))
            comptime if MODE == RESCALE:
                var ar = Vec(alpha[unsafe_offset=rr])
                comptime for t in range(TV):
                    acc[r * TV + t] = acc[r * TV + t] * ar
    for p in range(kdim):
        var bp = b.unsafe_offset(p * ldb)
        var bv = Array[Vec, TV](fill=Vec(0))
        comptime for t in range(TV):
            bv[t] = masked_load[F32_WIDTH](bp.unsafe_offset(t * F32_WIDTH), mask[t], Vec(0))
        var off = p * a_cs
        comptime for r in range(TM):
            var ab = Vec(row[r][unsafe_offset=off])
            comptime for t in range(TV):
                acc[r * TV + t] = ab.fma(bv[t], acc[r * TV + t])
    comptime for r in range(TM):
        if r < rows:
            comptime for t in range(TV):
                masked_store[F32_WIDTH](acc[r * TV + t], c.unsafe_offset(r * ldc + t * F32_WIDTH), mask[t])


def acc_product[MODE: Int](a: F32Ptr, a_rs: Int, a_cs: Int, b: F32Ptr, ldb: Int, c: F32Ptr, ldc: Int,
                           kdim: Int, rows: Int, cols: Int, alpha: F32Ptr):
    """C[0:rows, 0:cols] (+)= A @ B in MR-row tiles, panels of NV vectors of columns, and
    one narrower panel (1..NV vectors, masked) for what is left of the columns."""
    comptime PW = NV * F32_WIDTH
    var j = 0
    while cols - j >= PW:
        for i in range(0, rows, MR):
            acc_tile[MR, NV, MODE](a.unsafe_offset(i * a_rs), a_rs, a_cs, b.unsafe_offset(j), ldb,
                                   c.unsafe_offset(i * ldc + j), ldc, kdim, min(MR, rows - i), PW,
                                   alpha.unsafe_offset(i))
        j += PW
    var rest = cols - j
    if rest <= 0:
        return
    var vectors = (rest + F32_WIDTH - 1) // F32_WIDTH
    comptime for tv in range(1, NV + 1):
        if vectors == tv:
            for i in range(0, rows, MR):
                acc_tile[MR, tv, MODE](a.unsafe_offset(i * a_rs), a_rs, a_cs, b.unsafe_offset(j), ldb,
                                       c.unsafe_offset(i * ldc + j), ldc, kdim, min(MR, rows - i), rest,
                                       alpha.unsafe_offset(i))


def transpose_rows(src: F32Ptr, d: Int, count: Int, dst: F32Ptr, ld: Int, width: Int):
    """Transposes: dst[p, i] = src[i, p] for i < count (rows of src d floats apart), zeros for
    count <= i < width: `width` columns of a d-row matrix whose rows are ld floats apart."""
    for p in range(d):
        var out_row = dst.unsafe_offset(p * ld)
        for i in range(count):
            out_row[unsafe_offset=i] = src[unsafe_offset=i * d + p]
        for i in range(count, width):
            out_row[unsafe_offset=i] = 0


def flash_unit(q: F32Ptr, k: F32Ptr, v: F32Ptr, o: F32Ptr, lse: F32Ptr, bh: Int, q0: Int,
               time: Int, d: Int, scale: Float32, qt: F32Ptr, st: F32Ptr, stats: F32Ptr):
    """Queries q0..q0+BQ-1 of head bh: out rows and lse, with the online softmax over key
    blocks. qt (d x BQ), st (BK x BQ) and stats (3 x BQ) are the caller's scratch."""
    var base = bh * time * d
    var qb = min(BQ, time - q0)
    var m = stats                                      # per query: running max,
    var l = stats.unsafe_offset(BQ)                    # running sum of exp(S - m),
    var alpha = stats.unsafe_offset(2 * BQ)            # and this block's rescale factor
    for c in range(0, BQ, F32_WIDTH):
        m.unsafe_store[width=F32_WIDTH](c, Vec(neg_inf[DType.float32]()))
        l.unsafe_store[width=F32_WIDTH](c, Vec(0))
    # The padding columns (queries past `time`) are zeros: finite scores, never stored.
    transpose_rows(q.unsafe_offset(base + q0 * d), d, qb, qt, BQ, BQ)
    var orows = o.unsafe_offset(base + q0 * d)
    var key_end = q0 + qb                              # keys past the last query: all masked
    for k0 in range(0, key_end, BK):
        var kb = min(BK, key_end - k0)
        var colmax = alpha                             # alpha's slots hold the block max until the rescale
        for c in range(0, BQ, F32_WIDTH):
            colmax.unsafe_store[width=F32_WIDTH](c, Vec(neg_inf[DType.float32]()))
        var kr = k.unsafe_offset(base + k0 * d)
        if k0 + kb - 1 > q0:                           # the diagonal block: mask the future
            scores_block[True, True](kr, d, qt, BQ, st, kb, scale, k0, q0, colmax)
        else:
            scores_block[False, True](kr, d, qt, BQ, st, kb, scale, k0, q0, colmax)
        # Online softmax, one lane per query: exp and sum run down the tile's rows.
        # Every query sees key 0 in the first block, so m is finite from then on.
        for c in range(0, BQ, F32_WIDTH):
            var mx = colmax.unsafe_load[width=F32_WIDTH](c)
            var m_old = m.unsafe_load[width=F32_WIDTH](c)
            var m_new = max(m_old, mx)
            # Two partial sums: half the length of each float32 running sum.
            var s0 = Vec(0)
            var s1 = Vec(0)
            var jj = 0
            while jj + 1 < kb:
                var e0 = exp_or_zero(st.unsafe_load[width=F32_WIDTH](jj * BQ + c) - m_new)
                var e1 = exp_or_zero(st.unsafe_load[width=F32_WIDTH]((jj + 1) * BQ + c) - m_new)
                st.unsafe_store[width=F32_WIDTH](jj * BQ + c, e0)
                st.unsafe_store[width=F32_WIDTH]((jj + 1) * BQ + c, e1)
                s0 += e0
                s1 += e1
                jj += 2
            if jj < kb:
                var e0 = exp_or_zero(st.unsafe_load[width=F32_WIDTH](jj * BQ + c) - m_new)
                st.unsafe_store[width=F32_WIDTH](jj * BQ + c, e0)
                s0 += e0
            var a = exp_or_zero(m_old - m_new)         # 0 on the first block (m_old = -inf)
            l.unsafe_store[width=F32_WIDTH](c, l.unsafe_load[width=F32_WIDTH](c) * a + (s0 + s1))
            m.unsafe_store[width=F32_WIDTH](c, m_new)
            alpha.unsafe_store[width=F32_WIDTH](c, a)
        # out[q0 + i, :] = alpha_i out[q0 + i, :] + sum_jj P^T[jj, i] v[k0 + jj, :]: A = P
        # with strides (1, BQ). The first block overwrites the poisoned rows.
        var vr = v.unsafe_offset(base + k0 * d)
        if k0 == 0:
            acc_product[OVERWRITE](st, 1, BQ, vr, d, orows, d, kb, qb, d, alpha)
        else:
            acc_product[RESCALE](st, 1, BQ, vr, d, orows, d, kb, qb, d, alpha)
    var tail = first_lanes(d % F32_WIDTH)
    for i in range(qb):
        var li = l[unsafe_offset=i]
        scale_vec(orows.unsafe_offset(i * d), 1 / li, d, tail)
        lse[unsafe_offset=bh * time + q0 + i] = m[unsafe_offset=i] + log(li)


def attention_flash(q: F32Ptr, k: F32Ptr, v: F32Ptr, o: F32Ptr, lse: F32Ptr,
                    batch: Int, heads: Int, time: Int, head_dim: Int):
    var d = head_dim
    var scale = inv_sqrt(d)
    var blocks = (time + BQ - 1) // BQ
    var units = batch * heads * blocks
    var fmas = batch * heads * time * (time + 1) // 2 * d
    var workers = min(parallelism_level(), units) if fmas >= MIN_PARALLEL_FMAS else 1

    def work(w: Int) {var}:
        var scratch = unsafe_alloc[Float32](d * BQ + BK * BQ + 3 * BQ, alignment=64).unsafe_origin_cast[MutAnyOrigin]()
        var qt = scratch
        var st = scratch.unsafe_offset(d * BQ)
        var stats = scratch.unsafe_offset(d * BQ + BK * BQ)
        # Round-robin over (head, query block): each worker gets early (short) and late
        # (long) query blocks alike, and both work on the same head at about the same time.
        for u in range(w, units, workers):
            flash_unit(q, k, v, o, lse, u // blocks, (u % blocks) * BQ, time, d, scale, qt, st, stats)
        scratch.unsafe_free()

    if workers > 1:
        parallelize(work, workers)
    else:
        work(0)


# ----------------------------------------------------------------------------- backward

def attention_backward_naive(q: F32Ptr, k: F32Ptr, v: F32Ptr, o: F32Ptr, lse: F32Ptr, dout: F32Ptr,
                             dq: F32Ptr, dk: F32Ptr, dv: F32Ptr,
                             batch: Int, heads: Int, time: Int, head_dim: Int):
    var d = head_dim
    var scale = inv_sqrt(d)
    var n = batch * heads * time * d
    for x in range(n):                                 # dk and dv are sums over queries
        dq[unsafe_offset=x] = 0
        dk[unsafe_offset=x] = 0
        dv[unsafe_offset=x] = 0
    var prow = unsafe_alloc[Float32](time).unsafe_origin_cast[MutAnyOrigin]()   # one row of P
    for bh in range(batch * heads):
        var base = bh * time * d
        for i in range(time):
            var qi = q.unsafe_offset(base + i * d)
            var gi = dout.unsafe_offset(base + i * d)
            var oi = o.unsafe_offset(base + i * d)
            var dqi = dq.unsafe_offset(base + i * d)
            var li = lse[unsafe_offset=bh * time + i]
            for j in range(i + 1):                     # P[i, j] = exp(S[i, j] - lse[i])
                var kj = k.unsafe_offset(base + j * d)
                var s: Float32 = 0
                for p in range(d):
                    s += qi[unsafe_offset=p] * kj[unsafe_offset=p]
                prow[unsafe_offset=j] = exp(s * scale - li)
            var big_d: Float32 = 0                     # D[i] = dout[i] . out[i]
            for p in range(d):
                big_d += gi[unsafe_offset=p] * oi[unsafe_offset=p]
            for j in range(i + 1):
                var pj = prow[unsafe_offset=j]
                var kj = k.unsafe_offset(base + j * d)
                var vj = v.unsafe_offset(base + j * d)
                var dkj = dk.unsafe_offset(base + j * d)
                var dvj = dv.unsafe_offset(base + j * d)
                var dp: Float32 = 0                    # dP[i, j] = dout[i] . v[j]
                for p in range(d):
                    dp += gi[unsafe_offset=p] * vj[unsafe_offset=p]
                    dvj[unsafe_offset=p] += pj * gi[unsafe_offset=p]
                var ds = pj * (dp - big_d) * scale
                for p in range(d):
                    dqi[unsafe_offset=p] += ds * kj[unsafe_offset=p]
                    dkj[unsafe_offset=p] += ds * qi[unsafe_offset=p]
    prow.unsafe_free()


def backward_head(q: F32Ptr, k: F32Ptr, v: F32Ptr, o: F32Ptr, lse: F32Ptr, dout: F32Ptr,
                  dq: F32Ptr, dk: F32Ptr, dv: F32Ptr, bh: Int, time: Int, d: Int, scale: Float32,
                  scratch: F32Ptr, tp: Int):
    """The dq, dk and dv rows of head bh, whose only writer this is. scratch holds q^T and
    dout^T (d x tp each, tp = time rounded up to BQ, zero-padded), lse and D (tp each)
    and two BK x BQ tiles."""
    var base = bh * time * d
    var qt = scratch
    var gt = scratch.unsafe_offset(d * tp)
    var lse_p = scratch.unsafe_offset(2 * d * tp)
    var big_d = scratch.unsafe_offset(2 * d * tp + tp)
    var pt = scratch.unsafe_offset(2 * d * tp + 2 * tp)                # P^T tile
    var dst = pt.unsafe_offset(BK * BQ)                                # dP^T, then dS^T
    transpose_rows(q.unsafe_offset(base), d, time, qt, tp, tp)
    transpose_rows(dout.unsafe_offset(base), d, time, gt, tp, tp)
    var tail = first_lanes(d % F32_WIDTH)
    for i in range(tp):
        if i < time:
            lse_p[unsafe_offset=i] = lse[unsafe_offset=bh * time + i]
            big_d[unsafe_offset=i] = dot(dout.unsafe_offset(base + i * d), o.unsafe_offset(base + i * d), d, tail)
        else:
            lse_p[unsafe_offset=i] = 0
            big_d[unsafe_offset=i] = 0
    for x in range(time * d):                          # all three arrive poisoned
        dq[unsafe_offset=base + x] = 0
        dk[unsafe_offset=base + x] = 0
        dv[unsafe_offset=base + x] = 0
    var sc = Vec(scale)
    for k0 in range(0, time, BK):
        var kb = min(BK, time - k0)
        var kr = k.unsafe_offset(base + k0 * d)
        var vr = v.unsafe_offset(base + k0 * d)
        # Query blocks from the one holding key k0: the earlier ones cannot see it.
        for q0 in range(k0 // BQ * BQ, time, BQ):
            var qb = min(BQ, time - q0)
            if k0 + kb - 1 > q0:                                                  # S^T
                scores_block[True, False](kr, d, qt.unsafe_offset(q0), tp, pt, kb, scale, k0, q0, pt)
            else:
                scores_block[False, False](kr, d, qt.unsafe_offset(q0), tp, pt, kb, scale, k0, q0, pt)
            scores_block[False, False](vr, d, gt.unsafe_offset(q0), tp, dst, kb, 1, k0, q0, pt)  # dP^T = V dout^T
            for c in range(0, BQ, F32_WIDTH):
                var lv = lse_p.unsafe_load[width=F32_WIDTH](q0 + c)
                var dd = big_d.unsafe_load[width=F32_WIDTH](q0 + c)
                for jj in range(kb):
                    var at = jj * BQ + c
                    var p = exp_or_zero(pt.unsafe_load[width=F32_WIDTH](at) - lv)  # masked: -inf -> 0
                    pt.unsafe_store[width=F32_WIDTH](at, p)
                    dst.unsafe_store[width=F32_WIDTH](at, p * (dst.unsafe_load[width=F32_WIDTH](at) - dd) * sc)
            # dv[k0 + jj] += sum_i P^T[jj, i] dout[q0 + i]: A = P^T with strides (BQ, 1).
            acc_product[ACCUMULATE](pt, BQ, 1, dout.unsafe_offset(base + q0 * d), d,
                                    dv.unsafe_offset(base + k0 * d), d, qb, kb, d, pt)
            # dk[k0 + jj] += sum_i dS^T[jj, i] q[q0 + i] (the 1/sqrt(d) is in dS^T).
            acc_product[ACCUMULATE](dst, BQ, 1, q.unsafe_offset(base + q0 * d), d,
                                    dk.unsafe_offset(base + k0 * d), d, qb, kb, d, pt)
            # dq[q0 + i] += sum_jj dS^T[jj, i] k[k0 + jj]: A = dS with strides (1, BQ).
            acc_product[ACCUMULATE](dst, 1, BQ, kr, d, dq.unsafe_offset(base + q0 * d), d, kb, qb, d, pt)


def attention_backward_flash(q: F32Ptr, k: F32Ptr, v: F32Ptr, o: F32Ptr, lse: F32Ptr, dout: F32Ptr,
                             dq: F32Ptr, dk: F32Ptr, dv: F32Ptr,
                             batch: Int, heads: Int, time: Int, head_dim: Int):
    var d = head_dim
    var scale = inv_sqrt(d)
    var units = batch * heads
    var tp = (time + BQ - 1) // BQ * BQ
    var fmas = 5 * batch * heads * time * (time + 1) // 2 * d
    var workers = min(parallelism_level(), units) if fmas >= MIN_PARALLEL_FMAS else 1

    def work(w: Int) {var}:
        var scratch = unsafe_alloc[Float32](2 * d * tp + 2 * tp + 2 * BK * BQ, alignment=64).unsafe_origin_cast[
            MutAnyOrigin]()
        for bh in range(w, units, workers):
            backward_head(q, k, v, o, lse, dout, dq, dk, dv, bh, time, d, scale, scratch, tp)
        scratch.unsafe_free()

    if workers > 1:
        parallelize(work, workers)
    else:
        work(0)


# ----------------------------------------------------------------------------- Python

comptime AttentionKernel = def(F32Ptr, F32Ptr, F32Ptr, F32Ptr, F32Ptr, Int, Int, Int, Int) thin -> None


def attention_call[kernel: AttentionKernel](args: Args) raises:
    args.expect(9)                                   # q, k, v, out, lse | batch, heads, time, head_dim
    kernel(args.f32(0), args.f32(1), args.f32(2), args.f32(3), args.f32(4),
           args.int(5), args.int(6), args.int(7), args.int(8))


comptime AttentionBackwardKernel = def(
    F32Ptr, F32Ptr, F32Ptr, F32Ptr, F32Ptr, F32Ptr, F32Ptr, F32Ptr, F32Ptr, Int, Int, Int, Int) thin -> None


def attention_backward_call[kernel: AttentionBackwardKernel](args: Args) raises:
    args.expect(13)                                  # q, k, v, out, lse, dout, dq, dk, dv | batch, heads, time, head_dim
    kernel(args.f32(0), args.f32(1), args.f32(2), args.f32(3), args.f32(4), args.f32(5),
           args.f32(6), args.f32(7), args.f32(8), args.int(9), args.int(10), args.int(11), args.int(12))


@export
def PyInit_attention() abi("C") -> PythonObject:
    try:
        var m = new_module("attention")
        add_variant[attention_call[attention_naive]](m, "attention_naive")
        add_variant[attention_call[attention_parallel]](m, "attention_parallel")
        add_variant[attention_call[attention_flash]](m, "attention_flash")
        add_variant[attention_backward_call[attention_backward_naive]](m, "attention_backward_naive")
        add_variant[attention_backward_call[attention_backward_flash]](m, "attention_backward_flash")
        return m.finalize()
    except e:
        abort(String("error creating the attention module: ", e))
