"""A character-level GPT-2, written once against the op layer (harness/backends/ops.py), so
that the same code trains on pure Python, NumPy, Mojo, CUDA and the float64 reference.

    x = embedding(idx, wte, wpe)                              (B, T, C)
    for each of L blocks (pre-LayerNorm):
        h  = layernorm(x)
        q, k, v = h @ Wq + bq, h @ Wk + bk, h @ Wv + bv       (B, T, C) -> transpose -> (B, H, T, d)
        a, lse = attention(q, k, v)                           causal, scale 1/sqrt(d)
        x  = x + transpose(a) @ Wo + bo                       (B, H, T, d) -> (B, T, C)
        h  = layernorm(x)
        x  = x + gelu(h @ Wfc + bfc) @ Wp + bp                4C hidden, GELU's tanh form
    logits = layernorm(x) @ wte^T                             the output head tied to wte
    loss   = cross_entropy(logits, targets)                   mean over B x T positions

GPT-2's c_attn is one (C, 3C) matrix; here it is held as its three (C, C) blocks Wq, Wk, Wv,
the same function, so that q, k and v come out of the matmul as tensors of their own (the
op layer has views of a whole buffer, not of a slice). Every parameter is updated by AdamW
with the same scalars, weight decay included, and the learning rate warmed up linearly over
the first `warmup` steps (the PyTorch twin does the same).

The backward is the forward's calls in reverse, each primitive's own backward:
    dlogits -> matmul_backward -> dxf, d(wte^T) -> transpose -> the head's share of dwte
    layernorm_backward; per block, in reverse: bias_add_backward, matmul_backward,
    gelu_backward, layernorm_backward, the residual's gradient added to the branch's,
    attention_backward (P recomputed from the saved lse), transpose back, three
    matmul_backwards whose input gradients are summed
    embedding_backward -> dwte (plus the head's share), dwpe
Each call is bound once to buffers in the backend's memory; a step uploads one batch of
token ids and targets, and runs the calls.

Initial weights, shared by every backend: N(0, 0.02) for the matrices and both tables,
the two residual projections (Wo, Wp) scaled by 1/sqrt(2L) as GPT-2 does, biases 0,
LayerNorm gains 1 and offsets 0. Matrices are stored (in, out): the layer is x @ W.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

F32 = np.float32

# The breakdown's groups: what a learner asks of a GPT step.
KIND = {"attention": "attention", "attention_backward": "attention",
        "matmul": "matmul", "matmul_backward": "matmul"}


def kind_of(primitive: str) -> str:
    return KIND.get(primitive, "rest")


@dataclass(frozen=True)
class Config:
    layers: int = 2
    heads: int = 4
    channels: int = 64
    context: int = 64
    batch: int = 8
    steps: int = 1500
    lr: float = 1e-3
    warmup: int = 100                 # steps of linear learning-rate warm-up, as GPT-2 trains
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 1e-2
    seed: int = 0                     # initial weights and batches
    vocab: int = 65                   # set from the corpus

    def __post_init__(self):
        from ..errors import InputError
        if self.warmup < 0:
            raise InputError(f"bad warmup {self.warmup}: it must be 0 or more")
        for name in ("layers", "heads", "channels", "context", "batch", "steps", "vocab"):
            if getattr(self, name) <= 0:
                raise InputError(f"bad {name} {getattr(self, name)}: it must be positive")
        if self.channels % self.heads:
            raise InputError(f"channels ({self.channels}) must be a multiple of heads ({self.heads})")

    def lr_at(self, t: int) -> float:
        """The learning rate of step t (from 1): lr * t / warmup, then lr. Without the warm-up
        a 10.8 M-parameter model's loss spikes in its first steps (at steps 3 and 15 of this
        corpus), and at a spike float32 rounding is amplified: every float32 run, PyTorch's
        included, then left the float64 curve by more than the agreement allows (measured)."""
        return self.lr * min(1.0, t / self.warmup) if self.warmup > 0 else self.lr

    @property
    def head_dim(self) -> int:
        return self.channels // self.heads

    @property
    def tokens(self) -> int:
        return self.batch * self.context

    def parameters(self) -> int:
        C, V, T = self.channels, self.vocab, self.context
        return V * C + T * C + self.layers * (12 * C * C + 13 * C) + 2 * C

    def step_flops(self) -> float:
        """6 N D (a forward's 2 FLOPs per parameter per token, twice that backward) plus the
        attention scores and their product with V: 4 T^2 C per layer forward counting the
        causal half (2 T^2 C), three times that with the backward."""
        attn = self.layers * self.batch * 3 * 2 * self.context * self.context * self.channels
        return 6.0 * self.parameters() * self.tokens + attn

    def describe(self) -> str:
        return (f"L={self.layers}, H={self.heads}, C={self.channels}, T={self.context}, B={self.batch} "
                f"({self.parameters():,} parameters)")

    def as_dict(self) -> dict:
        return {**self.__dict__, "parameters": self.parameters(), "head_dim": self.head_dim}


def parameter_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    C, V, T = cfg.channels, cfg.vocab, cfg.context
    shapes = {"wte": (V, C), "wpe": (T, C)}
    for i in range(cfg.layers):
        p = f"h{i}."
        shapes.update({p + "ln1_g": (C,), p + "ln1_b": (C,),
                       p + "Wq": (C, C), p + "bq": (C,), p + "Wk": (C, C), p + "bk": (C,),
                       p + "Wv": (C, C), p + "bv": (C,), p + "Wo": (C, C), p + "bo": (C,),
                       p + "ln2_g": (C,), p + "ln2_b": (C,),
                       p + "Wfc": (C, 4 * C), p + "bfc": (4 * C,), p + "Wp": (4 * C, C), p + "bp": (C,)})
    shapes.update({"lnf_g": (C,), "lnf_b": (C,)})
    return shapes


def initial_weights(cfg: Config) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    out = {}
    for name, shape in parameter_shapes(cfg).items():
        leaf = name.split(".")[-1]
        if leaf.endswith("_g"):
            out[name] = np.ones(shape, F32)
        elif leaf.startswith("b") or leaf.endswith("_b"):
            out[name] = np.zeros(shape, F32)
        else:
            std = 0.02 / (math.sqrt(2 * cfg.layers) if leaf in ("Wo", "Wp") else 1.0)
            out[name] = (std * rng.standard_normal(shape)).astype(F32)
    return out


TUNE_ROUNDS = 3            # timed passes per candidate when tuning (GPT.tune)
PRUNE = 2.0                # a candidate this many times slower than its site's best is dropped
CHECK_PASSES = 3           # interleaved whole passes that judge the tuned choices against the last variants


@dataclass
class CallSpec:
    name: str
    primitive: str
    phase: str                        # forward | backward | update
    tensors: dict                     # declared tensor -> buffer name


@dataclass
class GPT:
    """The model's buffers and bound calls on one backend's op layer."""
    ops: object
    cfg: Config
    variants: dict[str, str]
    train: bool = True
    buf: dict = field(default_factory=dict)
    specs: list = field(default_factory=list)
    calls: dict = field(default_factory=dict)
    site_variants: dict = field(default_factory=dict)    # call name -> variant
    check: dict | None = None                            # tune's whole-pass check (see tune)

    # ------------------------------------------------------------------ building
    def _new(self, name, shape, dtype="float32"):
        self.buf[name] = self.ops.empty(shape, dtype)
        return name

    def _view(self, name, shape):
        """A view of buffer `name` with another shape, named name@shape."""
        shape = tuple(shape)
        key = f"{name}@{'x'.join(map(str, shape))}"
        if key not in self.buf:
            self.buf[key] = self.ops.view(self.buf[name], shape)
        return key

    def _call(self, name, primitive, phase, **tensors):
        self.specs.append(CallSpec(name, primitive, phase, tensors))

    @classmethod
    def build(cls, ops, cfg: Config, variant_of, weights: dict[str, np.ndarray], train: bool = True) -> "GPT":
        """variant_of(primitive) -> the variant to run; weights: the initial values (or a trained
        model's). train=False builds the forward only (sampling)."""
        prims = ("embedding", "layernorm", "matmul", "bias_add", "transpose", "attention", "add", "gelu",
                 "cross_entropy")
        if train:
            prims += ("cross_entropy_backward", "matmul_backward", "layernorm_backward", "bias_add_backward",
                      "gelu_backward", "attention_backward", "embedding_backward", "adamw")
        m = cls(ops, cfg, {p: variant_of(p) for p in prims}, train)
        for name, w in weights.items():
            w = np.asarray(w)               # float64 weights stay float64 on the reference (finite differences)
            m.buf[name] = ops.upload(w if getattr(ops, "keeps_float64", False) else w.astype(F32))
        m._forward_graph()
        if train:
            m._backward_graph()
            m._update_graph()
        adam = {"lr": cfg.lr_at(1), "beta1": cfg.beta1, "beta2": cfg.beta2, "eps": cfg.eps,
                "weight_decay": cfg.weight_decay, "step": 1}
        for s in m.specs:
            m.site_variants[s.name] = m.variants[s.primitive]
            m.calls[s.name] = ops.call(s.primitive, m.variants[s.primitive], {t: m.buf[b] for t, b in s.tensors.items()},
                                       adam if s.primitive == "adamw" else None)
        return m

    def _forward_graph(self):
        cfg, B, T, C, H, d, V = self.cfg, self.cfg.batch, self.cfg.context, self.cfg.channels, self.cfg.heads, \
            self.cfg.head_dim, self.cfg.vocab
        N = B * T
        new, view, call = self._new, self._view, self._call
        new("idx", (B, T), "int64")
        new("targets", (N,), "int64")
        self.ops.write(self.buf["idx"], np.zeros((B, T), np.int64))
        self.ops.write(self.buf["targets"], np.zeros((N,), np.int64))
        x = new("x0", (B, T, C))
        call("embed", "embedding", "forward", idx="idx", wte="wte", wpe="wpe", out=x)
        x = view(x, (N, C))
        for i in range(cfg.layers):
            p = f"h{i}."
            h = new(p + "ln1", (N, C))
            call(p + "ln1", "layernorm", "forward", x=x, gamma=p + "ln1_g", beta=p + "ln1_b", y=h)
            heads = {}
            for s in "qkv":
                lin, biased, split = new(p + s + "_lin", (N, C)), new(p + s, (N, C)), new(p + s + "_heads", (B, H, T, d))
                call(p + s + "_proj", "matmul", "forward", A=h, B=p + "W" + s, C=lin)
                call(p + s + "_bias", "bias_add", "forward", x=lin, b=p + "b" + s, y=biased)
                call(p + s + "_split", "transpose", "forward", x=view(biased, (B, T, H, d)), y=split)
                heads[s] = split
            att, lse = new(p + "att", (B, H, T, d)), new(p + "lse", (B, H, T))
            call(p + "attention", "attention", "forward", q=heads["q"], k=heads["k"], v=heads["v"], out=att, lse=lse)
            merged = new(p + "att_merged", (B, T, H, d))
            call(p + "merge", "transpose", "forward", x=att, y=merged)
            o, ob, x_mid = new(p + "o", (N, C)), new(p + "ob", (N, C)), new(p + "x_mid", (N, C))
            call(p + "o_proj", "matmul", "forward", A=view(merged, (N, C)), B=p + "Wo", C=o)
            call(p + "o_bias", "bias_add", "forward", x=o, b=p + "bo", y=ob)
            call(p + "residual1", "add", "forward", a=view(x, (N * C,)), b=view(ob, (N * C,)), out=view(x_mid, (N * C,)))
            h2 = new(p + "ln2", (N, C))
            call(p + "ln2", "layernorm", "forward", x=x_mid, gamma=p + "ln2_g", beta=p + "ln2_b", y=h2)
            f, fb, g = new(p + "fc", (N, 4 * C)), new(p + "fcb", (N, 4 * C)), new(p + "gelu", (N, 4 * C))
            call(p + "fc", "matmul", "forward", A=h2, B=p + "Wfc", C=f)
            call(p + "fc_bias", "bias_add", "forward", x=f, b=p + "bfc", y=fb)
            call(p + "gelu", "gelu", "forward", x=view(fb, (N * 4 * C,)), y=view(g, (N * 4 * C,)))
            pr, pb, x_out = new(p + "proj", (N, C)), new(p + "projb", (N, C)), new(p + "x_out", (N, C))
            call(p + "proj", "matmul", "forward", A=g, B=p + "Wp", C=pr)
            call(p + "proj_bias", "bias_add", "forward", x=pr, b=p + "bp", y=pb)
            call(p + "residual2", "add", "forward", a=view(x_mid, (N * C,)), b=view(pb, (N * C,)),
                 out=view(x_out, (N * C,)))
            x = x_out
        self.last_x = x
        new("xf", (N, C))
        call("lnf", "layernorm", "forward", x=x, gamma="lnf_g", beta="lnf_b", y="xf")
        new("wteT", (1, C, V, 1))
        call("head_transpose", "transpose", "forward", x=view("wte", (1, V, C, 1)), y="wteT")
        new("logits", (N, V))
        call("head", "matmul", "forward", A="xf", B=view("wteT", (C, V)), C="logits")
        new("losses", (N,))
        new("loss", ())
        call("loss", "cross_entropy", "forward", logits="logits", labels="targets", losses="losses", loss="loss")

    def _backward_graph(self):
        cfg, B, T, C, H, d, V = self.cfg, self.cfg.batch, self.cfg.context, self.cfg.channels, self.cfg.heads, \
            self.cfg.head_dim, self.cfg.vocab
        N = B * T
        new, view, call = self._new, self._view, self._call
        flat = lambda name, n: view(name, (n,))                          # noqa: E731
        new("dlogits", (N, V))
        call("loss_backward", "cross_entropy_backward", "backward", logits="logits", labels="targets", dlogits="dlogits")
        new("dxf", (N, C))
        new("dwteT", (C, V))
        call("head_backward", "matmul_backward", "backward", A="xf", B=view("wteT", (C, V)), dC="dlogits", dA="dxf",
             dB="dwteT")
        new("dwte_head", (1, V, C, 1))
        call("head_transpose_backward", "transpose", "backward", x=view("dwteT", (1, C, V, 1)), y="dwte_head")
        dx = new(f"dx{cfg.layers}", (N, C))
        call("lnf_backward", "layernorm_backward", "backward", x=self.last_x, gamma="lnf_g", dy="dxf", dx=dx,
             dgamma=new("d.lnf_g", (C,)), dbeta=new("d.lnf_b", (C,)))
        # Activation gradients are shared by the blocks (one block's backward is done before
        # the next starts); the residual stream's gradient moves down through dx{i}.
        for name, shape in (("g.dpr", (N, 4 * C)), ("g.dfb", (N, 4 * C)), ("g.dh2", (N, C)), ("g.dxm_ln", (N, C)),
                            ("g.dxm", (N, C)), ("g.dmerged", (N, C)), ("g.datt", (B, H, T, d)),
                            ("g.dqh", (B, H, T, d)), ("g.dkh", (B, H, T, d)), ("g.dvh", (B, H, T, d)),
                            ("g.dq", (B, T, H, d)), ("g.dk", (B, T, H, d)), ("g.dv", (B, T, H, d)),
                            ("g.dh_q", (N, C)), ("g.dh_k", (N, C)), ("g.dh_v", (N, C)), ("g.dh_qk", (N, C)),
                            ("g.dh", (N, C)), ("g.dx_ln", (N, C))):
            new(name, shape)
        for i in reversed(range(cfg.layers)):
            p, dp = f"h{i}.", f"d.h{i}."
            x_in = f"x0@{N}x{C}" if i == 0 else f"h{i - 1}.x_out"
            dx_out, dx_in = f"dx{i + 1}", new(f"dx{i}", (N, C))
            for g, shape in (("ln1_g", (C,)), ("ln1_b", (C,)), ("Wq", (C, C)), ("bq", (C,)), ("Wk", (C, C)),
                             ("bk", (C,)), ("Wv", (C, C)), ("bv", (C,)), ("Wo", (C, C)), ("bo", (C,)),
                             ("ln2_g", (C,)), ("ln2_b", (C,)), ("Wfc", (C, 4 * C)), ("bfc", (4 * C,)),
                             ("Wp", (4 * C, C)), ("bp", (C,))):
                new(dp + g, shape)
            # x_out = x_mid + (gelu(ln2(x_mid) @ Wfc + bfc) @ Wp + bp)
            call(p + "proj_bias_backward", "bias_add_backward", "backward", dy=dx_out, db=dp + "bp")
            call(p + "proj_backward", "matmul_backward", "backward", A=p + "gelu", B=p + "Wp", dC=dx_out,
                 dA="g.dpr", dB=dp + "Wp")
            call(p + "gelu_backward", "gelu_backward", "backward", x=flat(p + "fcb", N * 4 * C),
                 dy=flat("g.dpr", N * 4 * C), dx=flat("g.dfb", N * 4 * C))
            call(p + "fc_bias_backward", "bias_add_backward", "backward", dy="g.dfb", db=dp + "bfc")
            call(p + "fc_backward", "matmul_backward", "backward", A=p + "ln2", B=p + "Wfc", dC="g.dfb",
                 dA="g.dh2", dB=dp + "Wfc")
            call(p + "ln2_backward", "layernorm_backward", "backward", x=p + "x_mid", gamma=p + "ln2_g", dy="g.dh2",
                 dx="g.dxm_ln", dgamma=dp + "ln2_g", dbeta=dp + "ln2_b")
            call(p + "residual2_backward", "add", "backward", a=flat(dx_out, N * C), b=flat("g.dxm_ln", N * C),
                 out=flat("g.dxm", N * C))
            # x_mid = x_in + (transpose(attention(q, k, v)) @ Wo + bo)
            call(p + "o_bias_backward", "bias_add_backward", "backward", dy="g.dxm", db=dp + "bo")
            call(p + "o_backward", "matmul_backward", "backward", A=f"{p}att_merged@{N}x{C}", B=p + "Wo",
                 dC="g.dxm", dA="g.dmerged", dB=dp + "Wo")
            call(p + "merge_backward", "transpose", "backward", x=view("g.dmerged", (B, T, H, d)), y="g.datt")
            call(p + "attention_backward", "attention_backward", "backward", q=p + "q_heads", k=p + "k_heads",
                 v=p + "v_heads", out=p + "att", lse=p + "lse", dout="g.datt", dq="g.dqh", dk="g.dkh", dv="g.dvh")
            for s in "qkv":
                call(p + s + "_split_backward", "transpose", "backward", x=f"g.d{s}h", y=f"g.d{s}")
                ds = view(f"g.d{s}", (N, C))
                call(p + s + "_bias_backward", "bias_add_backward", "backward", dy=ds, db=dp + "b" + s)
                call(p + s + "_backward", "matmul_backward", "backward", A=p + "ln1", B=p + "W" + s, dC=ds,
                     dA=f"g.dh_{s}", dB=dp + "W" + s)
            call(p + "dh_qk", "add", "backward", a=flat("g.dh_q", N * C), b=flat("g.dh_k", N * C),
                 out=flat("g.dh_qk", N * C))
            call(p + "dh_qkv", "add", "backward", a=flat("g.dh_qk", N * C), b=flat("g.dh_v", N * C),
                 out=flat("g.dh", N * C))
            call(p + "ln1_backward", "layernorm_backward", "backward", x=x_in, gamma=p + "ln1_g", dy="g.dh",
                 dx="g.dx_ln", dgamma=dp + "ln1_g", dbeta=dp + "ln1_b")
            call(p + "residual1_backward", "add", "backward", a=flat("g.dxm", N * C), b=flat("g.dx_ln", N * C),
                 out=flat(dx_in, N * C))
        new("dwte_embed", (V, C))
        new("d.wpe", (T, C))
        call("embed_backward", "embedding_backward", "backward", dout=view("dx0", (B, T, C)), idx="idx", wte="wte",
             dwte="dwte_embed", dwpe="d.wpe")
        new("d.wte", (V, C))
        call("wte_grad_sum", "add", "backward", a=flat("dwte_embed", V * C), b=flat("dwte_head", V * C),
             out=flat("d.wte", V * C))

    def _update_graph(self):
        for name, shape in parameter_shapes(self.cfg).items():
            n = int(np.prod(shape))
            for moment in ("m.", "v."):
                self.buf[moment + name] = self.ops.upload(np.zeros(shape, F32))
            self._call("adamw " + name, "adamw", "update", params=self._view(name, (n,)),
                       grads=self._view("d." + name, (n,)), m=self._view("m." + name, (n,)),
                       v=self._view("v." + name, (n,)))

    # ------------------------------------------------------------------ choosing variants
    def tune(self, candidates_of, keep: set | None = None, rounds: int = TUNE_ROUNDS) -> None:
        """Give each call site the fastest of its candidate variants: candidates_of(primitive)
        lists them, most advanced last. Run after a batch is loaded.

        Candidates are timed INSIDE whole forward and backward passes, in step order, each
        call after the calls that precede it in training: so a call finds the caches as
        the step leaves them (an elementwise op fed by a matmul reads its input from
        memory, not from a warm L2) and the worker threads as the call before left them.
        Timed alone and back to back instead, every input is in cache and the workers
        awake: on the 10.8M model gelu's one-thread and parallel variants both took
        0.45 ms that way, and the one-thread one 0.84 ms inside the step.
        Pass r runs candidate (r + site index) % count at each site, so that neighbouring
        sites do not switch variants together; after the first round, a candidate more
        than PRUNE times slower than its site's best is dropped (the scalar ladders' first
        rungs). Call sites of the same primitive and shapes share one choice, from the
        median of all their samples.

        What a call's own time cannot show is what it leaves the next call: a one-thread
        variant, fast enough alone, lets the worker threads fall asleep, and the next
        parallel call pays to wake them. So the choices are kept only if whole passes run
        faster with them than with every site on its last candidate (the variant that
        uses the threads wherever they pay), timed over CHECK_PASSES interleaved passes;
        `check` records both medians. (On the 10.8M model the per-call choices lost by
        ~3 %: layernorm and bias_add_backward on one thread.)

        Inputs are always what the calls before wrote, as in training (garbage inputs
        could hold denormals, and time those). AdamW updates its tensors in place, so it
        is never timed here; nor are the primitives in `keep` (a user's --variants). The
        choice changes speed only: every variant is verified by the test suite, and the
        training run's agreement checks the whole step again."""
        sites = [s for s in self.specs if s.phase != "update"]
        key_of = {s.name: (s.primitive, tuple((t, self.buf[b].shape) for t, b in sorted(s.tensors.items())))
                  for s in sites}
        cands: dict = {}
        for s in sites:
            c = [] if (keep and s.primitive in keep) else list(candidates_of(s.primitive))
            if len(c) >= 2:
                cands.setdefault(key_of[s.name], c)
        last = {key: c[-1] for key, c in cands.items()}
        pool = {(s.name, self.site_variants[s.name]): self.calls[s.name] for s in sites}

        def call(s, v):                                   # (site, variant) -> its bound call, made once
            if (s.name, v) not in pool:
                pool[s.name, v] = self.ops.call(s.primitive, v, {t: self.buf[b] for t, b in s.tensors.items()})
            return pool[s.name, v]

        def assign(choice: dict) -> None:                 # key -> variant, for every site of the key
            for s in sites:
                v = choice.get(key_of[s.name])
                if v is not None:
                    self.calls[s.name], self.site_variants[s.name] = call(s, v), v

        samples: dict = {key: {v: [] for v in c} for key, c in cands.items()}
        width = max((len(c) for c in cands.values()), default=1)
        for r in range(rounds * width):
            if r == width:                                # every candidate timed once: prune
                for key, by in samples.items():
                    best = min(min(t) for t in by.values() if t)
                    cands[key] = [v for v in cands[key] if by[v] and min(by[v]) <= PRUNE * best]
            for idx, s in enumerate(sites):
                c = cands.get(key_of[s.name])
                if not c:
                    self.calls[s.name].run()
                    continue
                v = c[(r + idx) % len(c)]
                samples[key_of[s.name]][v].append(self.ops.time(call(s, v).run))
        tuned = {key: min(cands[key], key=lambda v: float(np.median(by[v]))) for key, by in samples.items()}
        self.check = None
        if tuned != last:
            times: dict = {"tuned": [], "last": []}
            for _ in range(CHECK_PASSES):
                for name, choice in (("last", last), ("tuned", tuned)):
                    assign(choice)
                    times[name].append(self.ops.time(self.forward_backward))
            med = {name: float(np.median(t)) for name, t in times.items()}
            kept = "tuned" if med["tuned"] <= med["last"] else "last"
            self.check = {"tuned_s": med["tuned"], "last_s": med["last"], "kept": kept}
            tuned = tuned if kept == "tuned" else last
        assign(tuned)
        in_use = {id(c) for c in self.calls.values()}
        for c in pool.values():
            if id(c) not in in_use:
                c.close()
        self.forward_backward()                          # every buffer as the chosen variants write it

    def poison(self) -> None:
        """NaN into every activation and gradient buffer (not the weights, the moments or the
        batch): what a call leaves unwritten then shows as NaN, never as a value left over
        from an earlier call (tuning runs every candidate on the same buffers)."""
        keep = set(parameter_shapes(self.cfg)) | {"idx", "targets"}
        for name, b in self.buf.items():
            if "@" in name or name in keep or name.startswith(("m.", "v.")):
                continue
            self.ops.poison(b)

    def variant_summary(self) -> dict[str, str]:
        """primitive -> its variant, or each variant with its number of call sites."""
        from collections import Counter
        out = {}
        for prim in self.variants:
            n = Counter(self.site_variants[s.name] for s in self.specs if s.primitive == prim)
            out[prim] = next(iter(n)) if len(n) == 1 else ", ".join(f"{v} x{k}" for v, k in n.most_common())
        return out

    # ------------------------------------------------------------------ running
    def names(self, phase: str | None = None) -> list[str]:
        return [s.name for s in self.specs if phase is None or s.phase == phase]

    def spec(self, name: str) -> CallSpec:
        return next(s for s in self.specs if s.name == name)

    def load_batch(self, idx: np.ndarray, targets: np.ndarray | None = None) -> None:
        V = self.cfg.vocab
        for what, a in (("token ids", idx), ("targets", targets)):
            if a is not None and a.size and not (0 <= int(a.min()) and int(a.max()) < V):
                from ..errors import InputError
                raise InputError(f"{what} must be in [0, {V}), got {int(a.min())}..{int(a.max())}")
        self.ops.write(self.buf["idx"], idx.reshape(self.cfg.batch, self.cfg.context))
        if targets is not None:
            self.ops.write(self.buf["targets"], targets.reshape(-1))

    def forward(self) -> None:
        for s in self.specs:
            if s.phase == "forward":
                self.calls[s.name].run()

    def forward_backward(self) -> None:
        for s in self.specs:
            if s.phase != "update":
                self.calls[s.name].run()

    def update(self, t: int) -> None:
        for s in self.specs:
            if s.phase == "update":
                c = self.calls[s.name]
                c.set_scalars(step=t, lr=self.cfg.lr_at(t))
                c.run()

    def step(self, t: int) -> None:
        self.forward_backward()
        self.update(t)

    def profiled_step(self, t: int) -> dict[str, float]:
        times = {}
        for s in self.specs:
            c = self.calls[s.name]
            if s.phase == "update":
                c.set_scalars(step=t, lr=self.cfg.lr_at(t))
            times[s.name] = self.ops.time(c.run)
        return times

    def outputs_of(self, name: str) -> dict[str, np.ndarray]:
        from ..core import catalogue
        s = self.spec(name)
        prim = catalogue.get(s.primitive)
        self.ops.synchronize()
        return {s.tensors[t.name].split("@")[0]: np.array(self.ops.download(self.buf[s.tensors[t.name]]), copy=True)
                for t in prim.outputs}

    def loss(self) -> float:
        return float(self.ops.download(self.buf["loss"]))

    def logits(self) -> np.ndarray:
        self.ops.synchronize()
        return np.array(self.ops.download(self.buf["logits"]), copy=True)

    def gradients(self) -> dict[str, np.ndarray]:
        self.ops.synchronize()
        return {name: np.array(self.ops.download(self.buf["d." + name]), copy=True) for name in parameter_shapes(self.cfg)}

    def weights(self) -> dict[str, np.ndarray]:
        self.ops.synchronize()
        return {name: np.array(self.ops.download(self.buf[name]), copy=True) for name in parameter_shapes(self.cfg)}

    def close(self) -> None:
        for c in self.calls.values():
            c.close()
        for name, b in self.buf.items():
            if "@" not in name:
                self.ops.free(b)
        self.calls, self.buf = {}, {}
