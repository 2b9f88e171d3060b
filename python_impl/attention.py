"""attention: causal scaled dot-product self-attention for each batch and head, from q, k, v
of shape (batch, heads, time, head_dim):

    S[i][j] = (q[i] . k[j]) / sqrt(head_dim)      for j <= i
    out[i]  = sum_j softmax(S[i])[j] * v[j]
    lse[i]  = log(sum_j exp(S[i][j]))             (saved for the backward)

Variants (naive first):
  naive     per query row: every visible score into a list, its max, the exponentials and
            their sum, then the weighted sum of the value rows. The row of scores exists.
  online    per query row, one pass over the keys with a running max m, running sum l and
            an accumulator of head_dim values; when a larger score arrives, l and the
            accumulator are rescaled by exp(old m - new m). No row of scores is kept: this
            is the loop that FlashAttention tiles (and the online softmax of softmax.py).

Backward, with P[i][j] = exp(S[i][j] - lse[i]) and D[i] = dout[i] . out[i]:
    dv[j] += P[i][j] dout[i];  dS = P[i][j] (dout[i] . v[j] - D[i])
    dq[i] += dS k[j] / sqrt(d);  dk[j] += dS q[i] / sqrt(d)
  naive     the (time x time) matrix P of each head built first, then the products
  recompute P recomputed from lse for one query row at a time, used and forgotten: memory
            stays at one row, whatever the context length
"""
import math


def _dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def attention_naive(q, k, v):
    out, lse = [], []
    for qb, kb, vb in zip(q, k, v):
        out_b, lse_b = [], []
        for qh, kh, vh in zip(qb, kb, vb):
            scale = 1.0 / math.sqrt(len(qh[0]))
            out_h, lse_h = [], []
            for i, qi in enumerate(qh):
                scores = [_dot(qi, kh[j]) * scale for j in range(i + 1)]     # the causal row
                m = max(scores)
                e = [math.exp(s - m) for s in scores]
                total = sum(e)
                row = [0.0] * len(qi)
                for w, vj in zip(e, vh):
                    for c in range(len(row)):
                        row[c] += w * vj[c]
                out_h.append([x / total for x in row])
                lse_h.append(m + math.log(total))
            out_b.append(out_h)
            lse_b.append(lse_h)
        out.append(out_b)
        lse.append(lse_b)
    return out, lse


def attention_online(q, k, v):
    out, lse = [], []
    for qb, kb, vb in zip(q, k, v):
        out_b, lse_b = [], []
        for qh, kh, vh in zip(qb, kb, vb):
            scale = 1.0 / math.sqrt(len(qh[0]))
            out_h, lse_h = [], []
            for i, qi in enumerate(qh):
                m, total = -math.inf, 0.0
                acc = [0.0] * len(qi)
                for j in range(i + 1):
                    s = _dot(qi, kh[j]) * scale
                    if s > m:
                        # Everything summed so far was scaled by exp(-old m): move it to the new max.
                        r = math.exp(m - s)
                        total *= r
                        acc = [a * r for a in acc]
                        m = s
                    w = math.exp(s - m)
                    total += w
                    acc = [a + w * x for a, x in zip(acc, vh[j])]
                out_h.append([a / total for a in acc])
                lse_h.append(m + math.log(total))
            out_b.append(out_h)
            lse_b.append(lse_h)
        out.append(out_b)
        lse.append(lse_b)
    return out, lse


def _zeros(t, d):
    return [[0.0] * d for _ in range(t)]


def attention_backward_naive(q, k, v, out, lse, dout):
    dq, dk, dv = [], [], []
    for b in range(len(q)):
        dq_b, dk_b, dv_b = [], [], []
        for h in range(len(q[b])):
            qh, kh, vh, oh, lh, gh = q[b][h], k[b][h], v[b][h], out[b][h], lse[b][h], dout[b][h]
            t, d = len(qh), len(qh[0])
            scale = 1.0 / math.sqrt(d)
            p = [[math.exp(_dot(qh[i], kh[j]) * scale - lh[i]) if j <= i else 0.0 for j in range(t)]
                 for i in range(t)]
            dqh, dkh, dvh = _zeros(t, d), _zeros(t, d), _zeros(t, d)
            for i in range(t):
                di = _dot(gh[i], oh[i])
                for j in range(i + 1):
                    ds = p[i][j] * (_dot(gh[i], vh[j]) - di)
                    for c in range(d):
                        dvh[j][c] += p[i][j] * gh[i][c]
                        dqh[i][c] += ds * kh[j][c] * scale
                        dkh[j][c] += ds * qh[i][c] * scale
            dq_b.append(dqh)
            dk_b.append(dkh)
            dv_b.append(dvh)
        dq.append(dq_b)
        dk.append(dk_b)
        dv.append(dv_b)
    return dq, dk, dv


def attention_backward_recompute(q, k, v, out, lse, dout):
    dq, dk, dv = [], [], []
    for qb, kb, vb, ob, lb, gb in zip(q, k, v, out, lse, dout):
        dq_b, dk_b, dv_b = [], [], []
        for qh, kh, vh, oh, lh, gh in zip(qb, kb, vb, ob, lb, gb):
            t, d = len(qh), len(qh[0])
            scale = 1.0 / math.sqrt(d)
            dqh, dkh, dvh = _zeros(t, d), _zeros(t, d), _zeros(t, d)
            for i, (qi, gi) in enumerate(zip(qh, gh)):
                di = _dot(gi, oh[i])
                for j in range(i + 1):                   # this row of P, recomputed and dropped
                    pij = math.exp(_dot(qi, kh[j]) * scale - lh[i])
                    ds = pij * (_dot(gi, vh[j]) - di) * scale
                    dvh[j] = [a + pij * g for a, g in zip(dvh[j], gi)]
                    dqh[i] = [a + ds * x for a, x in zip(dqh[i], kh[j])]
                    dkh[j] = [a + ds * x for a, x in zip(dkh[j], qi)]
            dq_b.append(dqh)
            dk_b.append(dkh)
            dv_b.append(dvh)
        dq.append(dq_b)
        dk.append(dk_b)
        dv.append(dv_b)
    return dq, dk, dv


VARIANTS = [attention_naive, attention_online, attention_backward_naive, attention_backward_recompute]      # lesson order: naive first
