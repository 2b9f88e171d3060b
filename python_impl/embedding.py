"""embedding: GPT-2's token and position embeddings, from integer token ids (batch, time):

    out[b][t][c] = wte[idx[b][t]][c] + wpe[t][c]

Variants (naive first):
  loop      index loops over batch, time and channels
  zip       each output row is one comprehension over the token's and the position's rows

Backward: a scatter-add. Every position adds its upstream row into the row of the token it
read, and every batch adds into the position's row:
    dwte[v] = sum of dout[b][t] over the positions with idx[b][t] = v
    dwpe[t] = sum of dout[b][t] over b
  loop      zero both tables, then one position at a time, one channel at a time
  rows      the same order of additions, a row at a time with comprehensions
"""


def embedding_loop(idx, wte, wpe):
    out = []
    for b in range(len(idx)):
        rows = []
        for t in range(len(idx[b])):
            tok = wte[idx[b][t]]
            pos = wpe[t]
            row = []
            for c in range(len(tok)):
                row.append(tok[c] + pos[c])
            rows.append(row)
        out.append(rows)
    return out


def embedding_zip(idx, wte, wpe):
    return [[[a + p for a, p in zip(wte[i], pos)] for i, pos in zip(seq, wpe)] for seq in idx]


def embedding_backward_loop(dout, idx, wte):
    channels = len(wte[0])
    dwte = [[0.0] * channels for _ in wte]            # wte is read for its shape only
    dwpe = [[0.0] * channels for _ in dout[0]]
    for b in range(len(dout)):
        for t in range(len(dout[b])):
            tok = dwte[idx[b][t]]
            pos = dwpe[t]
            g = dout[b][t]
            for c in range(channels):
                tok[c] += g[c]
                pos[c] += g[c]
    return dwte, dwpe


def embedding_backward_rows(dout, idx, wte):
    channels = len(wte[0])
    dwte = [[0.0] * channels for _ in wte]
    dwpe = [[0.0] * channels for _ in dout[0]]
    for seq_grad, seq in zip(dout, idx):
        for t, (g, i) in enumerate(zip(seq_grad, seq)):
            dwte[i] = [a + x for a, x in zip(dwte[i], g)]
            dwpe[t] = [a + x for a, x in zip(dwpe[t], g)]
    return dwte, dwpe


VARIANTS = [embedding_loop, embedding_zip, embedding_backward_loop, embedding_backward_rows]      # lesson order: naive first
