"""The same GPT in PyTorch on the CPU: the `torch-cpu` peer of `harness train gpt`.

Written the way a PyTorch user writes it (autograd, F.layer_norm, F.scaled_dot_product_attention
with is_causal, F.gelu(approximate="tanh"), F.cross_entropy, torch.optim.AdamW over every
parameter), from the same initial weights (harness/models/gpt.py: matrices (in, out), so a
layer is x @ W + b), on the same batches: its loss and gradients check the whole model
independently of the op layer, and its step time is the one a user would compare with.
"""
from __future__ import annotations

import numpy as np

from . import gpt


class TorchGPT:
    def __init__(self, cfg: gpt.Config, weights: dict[str, np.ndarray]):
        import torch
        self.torch, self.cfg = torch, cfg
        self.params = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in weights.items()}
        self.opt = torch.optim.AdamW(list(self.params.values()), lr=cfg.lr_at(1), betas=(cfg.beta1, cfg.beta2),
                                     eps=cfg.eps, weight_decay=cfg.weight_decay)

    def logits(self, idx):
        F, p, cfg = self.torch.nn.functional, self.params, self.cfg
        B, T = idx.shape
        C, H = cfg.channels, cfg.heads
        x = F.embedding(idx, p["wte"]) + p["wpe"][:T]
        for i in range(cfg.layers):
            b = f"h{i}."
            h = F.layer_norm(x, (C,), p[b + "ln1_g"], p[b + "ln1_b"], eps=1e-5)
            q, k, v = ((h @ p[b + "W" + s] + p[b + "b" + s]).view(B, T, H, C // H).transpose(1, 2) for s in "qkv")
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + a.transpose(1, 2).reshape(B, T, C) @ p[b + "Wo"] + p[b + "bo"]
            h = F.layer_norm(x, (C,), p[b + "ln2_g"], p[b + "ln2_b"], eps=1e-5)
            x = x + F.gelu(h @ p[b + "Wfc"] + p[b + "bfc"], approximate="tanh") @ p[b + "Wp"] + p[b + "bp"]
        x = F.layer_norm(x, (C,), p["lnf_g"], p["lnf_b"], eps=1e-5)
        return x @ p["wte"].T

    def loss(self, idx, targets):
        logits = self.logits(idx)
        return self.torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def set_lr(self, t: int) -> None:
        for group in self.opt.param_groups:            # the same warm-up as the op-layer model
            group["lr"] = self.cfg.lr_at(t)

    def step(self, t, idx, targets) -> float:
        self.set_lr(t)
        self.opt.zero_grad(set_to_none=False)
        loss = self.loss(idx, targets)
        loss.backward()
        self.opt.step()
        return float(loss.item())

    def gradients(self) -> dict[str, np.ndarray]:
        return {k: p.grad.numpy().copy() for k, p in self.params.items()}

    def weights(self) -> dict[str, np.ndarray]:
        return {k: p.detach().numpy().copy() for k, p in self.params.items()}


def available() -> str | None:
    """None when torch imports, else why not (one line)."""
    try:
        import torch  # noqa: F401
    except Exception as e:
        return f"torch is not installed ({type(e).__name__}); pip install torch==2.13.0 for the CPU build"
    return None

