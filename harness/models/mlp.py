"""A 64 -> H -> 10 classifier, written once against the op layer (harness/backends/ops.py),
so that the same code trains on pure Python, NumPy, Mojo, CUDA and the float64 reference:

    forward    h = x @ W1;  h = h + b1;  a = relu(h);  z = a @ W2;  z = z + b2
               losses, loss = cross_entropy(z, labels)
    backward   dz = cross_entropy_backward(z, labels)
               da, dW2 = matmul_backward(a, W2, dz);  db2 = bias_add_backward(dz)
               dh = relu_backward(h, da)
               dx, dW1 = matmul_backward(x, W1, dh);  db1 = bias_add_backward(dh)
    update     adamw(W, dW, m, v) for W1, b1, W2, b2, with the step number t

Sixteen primitive calls per step, each a Call bound once to buffers that live in the
backend's memory: a step uploads one batch (64 images and their labels) and runs the
calls; nothing else crosses between host and backend. dx is computed and thrown away
(matmul_backward returns both gradients); a model with a layer below would use it.

The initial weights are seeded and shared by every backend, drawn as torch.nn.Linear
draws its own (uniform in +-1/sqrt(fan_in)), and stored as (in, out) so that the layer is
x @ W: what the matmul primitive computes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

F32 = np.float32

# Calls in the order a step makes them, with the phase each belongs to (for the breakdown).
FORWARD = ("fc1", "bias1", "relu", "fc2", "bias2", "loss")
BACKWARD = ("loss_backward", "fc2_backward", "bias2_backward", "relu_backward", "fc1_backward", "bias1_backward")
UPDATE = ("adamw_W1", "adamw_b1", "adamw_W2", "adamw_b2")
PHASE = {**{c: "forward" for c in FORWARD}, **{c: "backward" for c in BACKWARD}, **{c: "update" for c in UPDATE}}
PRIMITIVE = {"fc1": "matmul", "bias1": "bias_add", "relu": "relu", "fc2": "matmul", "bias2": "bias_add",
             "loss": "cross_entropy", "loss_backward": "cross_entropy_backward", "fc2_backward": "matmul_backward",
             "bias2_backward": "bias_add_backward", "relu_backward": "relu_backward",
             "fc1_backward": "matmul_backward", "bias1_backward": "bias_add_backward",
             "adamw_W1": "adamw", "adamw_b1": "adamw", "adamw_W2": "adamw", "adamw_b2": "adamw"}
PARAMS = ("W1", "b1", "W2", "b2")
GRADS = {"W1": "dW1", "b1": "db1", "W2": "dW2", "b2": "db2"}


@dataclass(frozen=True)
class Config:
    hidden: int = 256
    batch: int = 64
    steps: int = 400
    lr: float = 3e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 1e-2
    seed: int = 0                     # initial weights and batches
    inputs: int = 64
    classes: int = 10

    def describe(self) -> str:
        return f"{self.inputs}->{self.hidden}->{self.classes}, batch {self.batch}, {self.steps} steps"

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def initial_weights(cfg: Config) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)

    def uniform(shape, fan_in):
        bound = 1.0 / np.sqrt(fan_in)
        return rng.uniform(-bound, bound, size=shape).astype(F32)
    return {"W1": uniform((cfg.inputs, cfg.hidden), cfg.inputs), "b1": uniform((cfg.hidden,), cfg.inputs),
            "W2": uniform((cfg.hidden, cfg.classes), cfg.hidden), "b2": uniform((cfg.classes,), cfg.hidden)}


def choose_variant(available: list[str], preferred: list[str] | None) -> str:
    """The first preferred name this backend has for a primitive, else its last (best) variant."""
    for name in preferred or ():
        if name in available:
            return name
    return available[-1]


@dataclass
class MLP:
    """The model's buffers and bound calls on one backend's op layer."""
    ops: object
    cfg: Config
    variants: dict[str, str]                       # primitive -> variant
    buf: dict = field(default_factory=dict)
    calls: dict = field(default_factory=dict)
    wiring: dict = field(default_factory=dict)     # call -> {tensor: buffer name}

    @classmethod
    def build(cls, ops, cfg: Config, variant_of, weights: dict[str, np.ndarray]) -> "MLP":
        """variant_of(primitive) -> the variant to run; weights: the shared initial values."""
        prims = sorted(set(PRIMITIVE.values()))
        m = cls(ops, cfg, {p: variant_of(p) for p in prims})
        B, D, H, C = cfg.batch, cfg.inputs, cfg.hidden, cfg.classes
        e = ops.empty
        m.buf = {
            "x": e((B, D)), "labels": e((B,), "int64"),
            "h": e((B, H)), "hb": e((B, H)), "a": e((B, H)), "z": e((B, C)), "zb": e((B, C)),
            "losses": e((B,)), "loss": e(()),
            "dz": e((B, C)), "da": e((B, H)), "dh": e((B, H)), "dx": e((B, D)),
            "dW1": e((D, H)), "db1": e((H,)), "dW2": e((H, C)), "db2": e((C,)),
        }
        for name in ("hb", "a", "da", "dh"):           # relu is elementwise: it sees them as vectors
            m.buf[name + "_flat"] = ops.view(m.buf[name], (B * H,))
        for name in PARAMS:
            m.buf[name] = ops.upload(weights[name])
            m.buf["m_" + name] = ops.upload(np.zeros_like(weights[name]))
            m.buf["v_" + name] = ops.upload(np.zeros_like(weights[name]))
        ops.write(m.buf["x"], np.zeros((B, D), F32))
        ops.write(m.buf["labels"], np.zeros((B,), np.int64))
        b = m.buf
        wiring = {
            "fc1": {"A": "x", "B": "W1", "C": "h"},
            "bias1": {"x": "h", "b": "b1", "y": "hb"},
            "relu": {"x": "hb_flat", "y": "a_flat"},
            "fc2": {"A": "a", "B": "W2", "C": "z"},
            "bias2": {"x": "z", "b": "b2", "y": "zb"},
            "loss": {"logits": "zb", "labels": "labels", "losses": "losses", "loss": "loss"},
            "loss_backward": {"logits": "zb", "labels": "labels", "dlogits": "dz"},
            "fc2_backward": {"A": "a", "B": "W2", "dC": "dz", "dA": "da", "dB": "dW2"},
            "bias2_backward": {"dy": "dz", "db": "db2"},
            "relu_backward": {"x": "hb_flat", "dy": "da_flat", "dx": "dh_flat"},
            "fc1_backward": {"A": "x", "B": "W1", "dC": "dh", "dA": "dx", "dB": "dW1"},
            "bias1_backward": {"dy": "dh", "db": "db1"},
        }
        for p in PARAMS:                                # AdamW is elementwise too: flat views
            for name in (p, GRADS[p], "m_" + p, "v_" + p):
                b[name + "_flat"] = ops.view(b[name], (b[name].size,))
            wiring[f"adamw_{p}"] = {"params": p + "_flat", "grads": GRADS[p] + "_flat",
                                    "m": f"m_{p}_flat", "v": f"v_{p}_flat"}
        m.wiring = wiring
        adam = {"lr": cfg.lr, "beta1": cfg.beta1, "beta2": cfg.beta2, "eps": cfg.eps,
                "weight_decay": cfg.weight_decay, "step": 1}
        for name, tensors in wiring.items():
            prim = PRIMITIVE[name]
            m.calls[name] = ops.call(prim, m.variants[prim], {t: b[v] for t, v in tensors.items()},
                                     adam if prim == "adamw" else None)
        return m

    # ------------------------------------------------------------------ a step
    def load_batch(self, x: np.ndarray, y: np.ndarray) -> None:
        if y.size and not (0 <= int(y.min()) and int(y.max()) < self.cfg.classes):
            from ..errors import InputError           # a label out of range is a read out of bounds
            raise InputError(f"labels must be in [0, {self.cfg.classes}), got {int(y.min())}..{int(y.max())}")
        self.ops.write(self.buf["x"], x)
        self.ops.write(self.buf["labels"], y)

    def forward_backward(self) -> None:
        for name in FORWARD + BACKWARD:
            self.calls[name].run()

    def update(self, t: int) -> None:
        for name in UPDATE:
            self.calls[name].set_scalars(step=t)
            self.calls[name].run()

    def step(self, t: int) -> None:
        self.forward_backward()
        self.update(t)

    def profiled_step(self, t: int) -> dict[str, float]:
        """One step with every call timed on its own (the backend's clock, its queue drained
        around each): the per-primitive breakdown. Slower than a plain step, never mixed into
        the step times."""
        times = {}
        for name in FORWARD + BACKWARD:
            times[name] = self.ops.time(self.calls[name].run)
        for name in UPDATE:
            self.calls[name].set_scalars(step=t)
            times[name] = self.ops.time(self.calls[name].run)
        return times

    def outputs_of(self, call: str) -> dict[str, np.ndarray]:
        """What one call wrote (its out and inout tensors), as host arrays, by buffer name."""
        from ..core import catalogue
        prim = catalogue.get(PRIMITIVE[call])
        self.ops.synchronize()
        out = {}
        for t in prim.outputs:
            name = self.wiring[call][t.name]
            out[name.removesuffix("_flat")] = np.array(self.ops.download(self.buf[name]), copy=True)
        return out

    def close(self) -> None:
        """Release the calls and every buffer (views go with the memory they share)."""
        for c in self.calls.values():
            c.close()
        for name, b in self.buf.items():
            if not name.endswith("_flat"):
                self.ops.free(b)
        self.calls, self.buf = {}, {}

    # ------------------------------------------------------------------ reading it
    def loss(self) -> float:
        return float(self.ops.download(self.buf["loss"]))

    def gradients(self) -> dict[str, np.ndarray]:
        self.ops.synchronize()
        return {GRADS[p]: np.array(self.ops.download(self.buf[GRADS[p]]), copy=True) for p in PARAMS}

    def weights(self) -> dict[str, np.ndarray]:
        self.ops.synchronize()
        return {p: np.array(self.ops.download(self.buf[p]), copy=True) for p in PARAMS}

    def dataset_loss(self, x: np.ndarray, y: np.ndarray) -> float:
        """The mean loss over whole batches of (x, y), the remainder dropped: forward calls only."""
        B, total, n = self.cfg.batch, 0.0, 0
        for start in range(0, len(x) - B + 1, B):
            self.load_batch(x[start:start + B], y[start:start + B])
            for name in FORWARD:
                self.calls[name].run()
            total += self.loss()
            n += 1
        return total / max(n, 1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class predictions for any number of images, through the forward calls, one batch
        at a time (a short last batch is padded and its padding dropped)."""
        B = self.cfg.batch
        out = []
        for start in range(0, len(x), B):
            chunk = x[start:start + B]
            pad = np.zeros((B, x.shape[1]), F32)
            pad[:len(chunk)] = chunk
            self.load_batch(pad, np.zeros(B, np.int64))
            for name in FORWARD[:-1]:
                self.calls[name].run()
            out.append(np.argmax(self.ops.download(self.buf["zb"]), axis=1)[:len(chunk)])
        return np.concatenate(out)
