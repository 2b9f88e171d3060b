"""The same MLP in PyTorch on the CPU: the `torch-cpu` peer of `harness train mlp`.

Written the way a PyTorch user would write it (autograd, torch.optim.AdamW, F.cross_entropy),
from the same initial weights and batches, so that its loss checks the whole model
independently and its step time is the one a user would compare with. Weights are (in, out)
as in harness/models/mlp.py, so the layer is x @ W + b. TF32 plays no part on a CPU.
"""
from __future__ import annotations

import time

import numpy as np

from ..train import AGREE_STEPS, GRAD_RTOL, PEER, WARMUP_STEPS, Run, loss_tolerance, tensor_report


def run(cfg, data, weights, batches, ref, progress) -> Run:
    result = Run(PEER, variants={"model": "torch.nn.functional + torch.optim.AdamW"})
    try:
        import torch
    except Exception as e:
        result.status, result.reason = "skip", (f"torch is not installed ({type(e).__name__}); "
                                                f"pip install torch==2.13.0 for the CPU build")
        progress.advance(f"{PEER}: skipped", cfg.steps)
        return result
    F = torch.nn.functional
    params = {k: torch.tensor(v, requires_grad=True) for k, v in weights.items()}
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                            weight_decay=cfg.weight_decay)
    result.variants["torch"] = torch.__version__
    x_all = torch.from_numpy(data.x_train)
    y_all = torch.from_numpy(data.y_train)

    def forward(x):
        h = torch.relu(x @ params["W1"] + params["b1"])
        return h @ params["W2"] + params["b2"]

    worst = {"err": 0.0, "step": None, "tol_used_pct": 0.0}
    for t, ix in enumerate(batches, start=1):
        idx = torch.from_numpy(ix)
        x, y = x_all[idx], y_all[idx]
        t0 = time.perf_counter_ns()
        opt.zero_grad(set_to_none=False)
        loss = F.cross_entropy(forward(x), y)
        loss.backward()
        if t == 1:
            got = {f"d{k}": p.grad.numpy().copy() for k, p in params.items()}
            result.gradients = {g: tensor_report(got[g], ref.gradients[g], GRAD_RTOL) for g in ref.gradients}
        opt.step()
        wall = (time.perf_counter_ns() - t0) * 1e-9
        value = float(loss.item())
        result.losses.append(value)
        result.steps = t
        if t <= AGREE_STEPS:
            err = abs(value - ref.losses[t - 1])
            used = 100 * err / loss_tolerance(ref.losses[t - 1])
            if used > worst["tol_used_pct"]:
                worst = {"err": err, "step": t, "tol_used_pct": used}
        elif t > AGREE_STEPS + WARMUP_STEPS:
            result.step_times.append(wall)
        progress.advance(f"{PEER}: step {t}")
    bad = [g for g, r in result.gradients.items() if not r["ok"]]
    result.agreement = {"steps": min(AGREE_STEPS, len(batches)), "max_loss_err": worst["err"],
                        "worst_step": worst["step"], "tol_used_pct": worst["tol_used_pct"],
                        "ok": worst["tol_used_pct"] <= 100 and not bad}
    if not result.agreement["ok"]:
        result.status = "fail"
        result.reason = (f"loss off by {worst['err']:.3g} at step {worst['step']}" if worst["tol_used_pct"] > 100
                         else "step-1 gradients off: " + ", ".join(bad))
    with torch.no_grad():
        B = cfg.batch
        n = (len(data.y_train) // B) * B
        logits = forward(x_all[:n])
        result.train_loss = float(np.mean([F.cross_entropy(logits[i:i + B], y_all[i:i + B]).item()
                                           for i in range(0, n, B)]))
        result.test_accuracy = float((forward(torch.from_numpy(data.x_test)).argmax(1).numpy()
                                      == data.y_test).mean())
    return result
