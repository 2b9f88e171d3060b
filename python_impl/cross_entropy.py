"""cross_entropy: softmax and the negative log-likelihood of the labels, fused:

    losses[r] = log(sum_j exp(x[r, j] - m_r)) + (m_r - x[r, label_r]),   m_r = max_j x[r, j]
    loss      = mean_r losses[r]

The max keeps exp() from overflowing, and m_r - x[r, label] is taken as a difference of
two logits (exact when they are close) rather than by adding m back to the log first.

Variants (naive first):
  two_pass  per row: the max, then the sum of exponentials, then the loss
  online    per row: max and sum in one pass (the online softmax), then the loss

Backward (the gradient of the mean loss): dlogits = (softmax(x) - onehot(label)) / batch
  loop      per row: max, sum, then each element's probability minus its label's 1
"""
import math


def cross_entropy_two_pass(logits, labels):
    losses = []
    for row, label in zip(logits, labels):
        m = max(row)
        s = 0.0
        for v in row:
            s += math.exp(v - m)
        losses.append(math.log(s) + (m - row[label]))
    return losses, sum(losses) / len(losses)


def cross_entropy_online(logits, labels):
    losses = []
    for row, label in zip(logits, labels):
        m, s = -math.inf, 0.0
        for v in row:
            if v > m:
                s = s * math.exp(m - v) + 1.0
                m = v
            else:
                s += math.exp(v - m)
        losses.append(math.log(s) + (m - row[label]))
    return losses, sum(losses) / len(losses)


def cross_entropy_backward_loop(logits, labels):
    batch = len(logits)
    out = []
    for row, label in zip(logits, labels):
        m = max(row)
        e = [math.exp(v - m) for v in row]
        inv = 1.0 / sum(e)
        grad = [p * inv / batch for p in e]
        grad[label] -= 1.0 / batch
        out.append(grad)
    return out


VARIANTS = [cross_entropy_two_pass, cross_entropy_online, cross_entropy_backward_loop]      # lesson order: naive first
