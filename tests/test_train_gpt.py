"""`harness train gpt`: a character GPT-2 written once on the op layer, trained on every backend,
judged against float64, checked against PyTorch, and sampled."""
import json
from dataclasses import replace

import numpy as np
import pytest

from harness import train_gpt as tg
from harness.backends.reference import ReferenceOps
from harness.cli import main
from harness.models import gpt, text

CORPUS = text.load()
TINY = gpt.Config(layers=2, heads=2, channels=8, context=6, batch=2, steps=40, vocab=CORPUS.vocab)


def _by(plan, name):
    return next(r for r in plan["runs"] if r["backend"] == name)


def test_the_corpus_is_the_shipped_text_split_nine_to_one():
    assert CORPUS.vocab == 61 and CORPUS.chars[0] == "\n" and CORPUS.chars[1] == " "
    n = len(CORPUS.train) + len(CORPUS.val)
    assert n == 95375 and len(CORPUS.train) == round(0.9 * n)
    assert CORPUS.decode(CORPUS.encode("MENENIUS:\n")) == "MENENIUS:\n"
    assert text.PATH.read_text(encoding="utf-8").startswith("First Citizen:\nBefore we proceed")


def test_the_unigram_baseline_is_the_held_out_cross_entropy_of_training_frequencies():
    counts = np.bincount(CORPUS.train, minlength=CORPUS.vocab) + 1.0
    p = counts / counts.sum()
    want = -np.mean(np.log(p[CORPUS.val]))
    assert text.unigram_baseline(CORPUS) == pytest.approx(want, rel=1e-12)
    # far below a uniform guess over 61 characters (log 61 = 4.11 nats)
    assert 3.0 < text.unigram_baseline(CORPUS) < np.log(61) - 0.5


def test_the_parameter_count_is_gpt2s():
    cfg = gpt.Config(vocab=65)
    assert cfg.parameters() == sum(int(np.prod(s)) for s in gpt.parameter_shapes(cfg).values())
    big = gpt.Config(layers=6, heads=6, channels=384, context=256, batch=4, vocab=65)
    assert round(big.parameters() / 1e6, 1) == 10.8


def _reference_model(cfg, weights, batch):
    m = gpt.GPT.build(ReferenceOps(), cfg, lambda p: "reference", weights)
    m.load_batch(*batch)
    return m


def test_the_models_gradients_are_finite_differences_of_its_loss():
    """The backward graph is wired right: on the float64 reference op layer, every parameter
    tensor's gradient matches central differences of the loss at a few of its elements."""
    cfg = replace(TINY, layers=1)
    weights = {k: v.astype(np.float64) for k, v in gpt.initial_weights(cfg).items()}
    rng = np.random.default_rng(0)
    for k in weights:                                    # off the symmetric start: biases, gains not 0/1
        weights[k] = weights[k] + 0.3 * rng.standard_normal(weights[k].shape)
    batch = text.batches(CORPUS.train, cfg.batch, cfg.context, 1, 0)[0]
    m = _reference_model(cfg, weights, batch)
    m.forward_backward()
    grads = m.gradients()
    m.close()

    def loss_at(w):
        mm = _reference_model(cfg, w, batch)
        mm.forward()
        out = mm.loss()
        mm.close()
        return out
    h = 1e-5
    for name, g in grads.items():
        for flat in rng.choice(g.size, size=min(3, g.size), replace=False):
            i = np.unravel_index(flat, g.shape)
            up = {k: v.copy() for k, v in weights.items()}
            dn = {k: v.copy() for k, v in weights.items()}
            up[name][i] += h
            dn[name][i] -= h
            fd = (loss_at(up) - loss_at(dn)) / (2 * h)
            assert abs(fd - g[i]) <= 1e-6 + 1e-5 * abs(fd), (name, i, fd, g[i])


def test_padding_after_a_position_cannot_change_its_logits():
    """Sampling pads the window on the right: causal attention must make that harmless."""
    cfg = replace(TINY, batch=1)
    weights = gpt.initial_weights(cfg)
    m = gpt.GPT.build(ReferenceOps(), cfg, lambda p: "reference", weights, train=False)
    x = CORPUS.encode("MENENI")[None, :]
    m.load_batch(x, np.zeros(cfg.context, np.int64))
    m.forward()
    a = m.logits()
    y = x.copy()
    y[0, 3:] = 0
    m.load_batch(y, np.zeros(cfg.context, np.int64))
    m.forward()
    b = m.logits()
    m.close()
    np.testing.assert_array_equal(a[:3], b[:3])
    assert not np.allclose(a[3:], b[3:])


def test_python_numpy_and_mojo_agree_with_float64_learn_and_sample_alike(mojo_backend):
    doc = tg.train(["python", "numpy", "mojo"], TINY)
    main_plan, small = doc["plans"]
    assert main_plan["name"] == "main" and [r["backend"] for r in main_plan["runs"]] == ["numpy", "mojo"]
    assert small["name"] == "python-sized" and "pure Python trains a smaller model" in small["note"]
    for plan in doc["plans"]:
        for r in plan["runs"]:
            assert r["status"] == "pass", (plan["name"], r["backend"], r["reason"])
            assert r["agreement"]["ok"] and r["agreement"]["steps"] == tg.AGREE_STEPS
            assert set(r["gradients"]) == set(gpt.parameter_shapes(gpt.Config(**{
                k: plan["config"][k] for k in ("layers", "heads", "channels", "context", "batch", "vocab")})))
            assert all(g["ok"] for g in r["gradients"].values())
            assert r["sample"].startswith(tg.PROMPT) and len(r["sample"]) == len(tg.PROMPT) + tg.SAMPLE_CHARS
            assert r["losses"][-1] < r["losses"][0]
    # the same weights, batches and draws: the samples agree until a near tie tips
    s = [r["sample"] for r in main_plan["runs"]]
    assert s[0][:60] == s[1][:60]
    assert _by(small, "numpy")["speedup_vs_python"] > 1
    assert tg.exit_status(doc) == 0


def test_an_attention_that_peeks_one_key_ahead_fails_at_that_call(register):
    register(peeking="tests.fakes:PeekingAttentionBackend")
    doc = tg.train(["peeking"], replace(TINY, steps=25))
    r = _by(doc["plans"][0], "peeking")
    assert r["status"] == "fail"
    bad = r["agreement"]["first_bad"]
    assert bad["primitive"] == "attention" and bad["call"] == "h0.attention" and bad["tensor"] == "h0.att"
    assert "first wrong at step 1: h0.attention" in r["reason"]
    assert tg.exit_status(doc) == 1


def test_an_unavailable_backend_is_skipped_with_why_and_the_others_run(register):
    register(gone="tests.fakes:UnavailableBackend")
    doc = tg.train(["gone", "numpy"], replace(TINY, steps=25))
    plan = doc["plans"][0]
    assert _by(plan, "gone")["status"] == "skip" and "no such hardware" in _by(plan, "gone")["reason"]
    assert _by(plan, "numpy")["status"] == "pass"


def test_the_pytorch_twin_is_the_same_model():
    """In float64 the PyTorch model and the reference op layer are one function: the same
    loss and gradients to 1e-10, from the same weights and batch."""
    torch = pytest.importorskip("torch", reason="torch is optional (pip install torch==2.13.0 for the CPU build)")
    from harness.models import torch_gpt
    weights = {k: v.astype(np.float64) for k, v in gpt.initial_weights(TINY).items()}
    x, y = text.batches(CORPUS.train, TINY.batch, TINY.context, 1, 0)[0]
    ref = _reference_model(TINY, weights, (x, y))
    ref.forward_backward()
    tm = torch_gpt.TorchGPT(TINY, weights)
    loss = tm.loss(torch.from_numpy(x), torch.from_numpy(y))
    loss.backward()
    assert float(loss.item()) == pytest.approx(ref.loss(), abs=1e-10)
    got = tm.gradients()
    for k, g in ref.gradients().items():
        np.testing.assert_allclose(got[k], g, atol=1e-10, rtol=1e-8, err_msg=k)
    ref.close()


def test_the_pytorch_twin_warms_up_and_steps_as_the_op_layer_does():
    """Three AdamW steps in float64 through a 2-step warm-up give the same losses (to 1e-7
    relative) and weights (to 1e-8) in both: what is left is the op layer's scalars (lr,
    betas, eps) typed float32 as the kernels see them, ~3e-8 of each. A twin that kept the first step's learning
    rate is held to the same bound and must fail it."""
    torch = pytest.importorskip("torch", reason="torch is optional (pip install torch==2.13.0 for the CPU build)")
    from harness.models import torch_gpt
    cfg = replace(TINY, warmup=2, lr=1e-2)
    assert [cfg.lr_at(t) for t in (1, 2, 3)] == [5e-3, 1e-2, 1e-2]
    weights = {k: v.astype(np.float64) for k, v in gpt.initial_weights(cfg).items()}
    batches = text.batches(CORPUS.train, cfg.batch, cfg.context, 3, 0)
    ref = gpt.GPT.build(ReferenceOps(), cfg, lambda p: "reference", weights)
    ref_losses = []
    for t, (x, y) in enumerate(batches, start=1):
        ref.load_batch(x, y)
        ref.step(t)
        ref_losses.append(ref.loss())
    want = ref.weights()
    ref.close()

    def worst(tm):
        losses = [tm.step(t, torch.from_numpy(x), torch.from_numpy(y)) for t, (x, y) in enumerate(batches, start=1)]
        # the loss of step t is computed before step t's update: the last one shows the first two updates
        loss_err = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses))
        got = tm.weights()                              # absolute: bk's gradient is 0 but for rounding
        return loss_err, max(float(np.max(np.abs(got[k] - w))) for k, w in want.items())
    loss_err, weight_err = worst(torch_gpt.TorchGPT(cfg, weights))
    assert loss_err < 1e-7 and weight_err < 1e-8, (loss_err, weight_err)
    frozen = torch_gpt.TorchGPT(cfg, weights)
    frozen.set_lr = lambda t: None                      # the near miss: no warm-up schedule
    loss_err, weight_err = worst(frozen)
    assert loss_err > 1e-7 and weight_err > 1e-8, (loss_err, weight_err)


def test_the_torch_peer_agrees_in_float32():
    pytest.importorskip("torch", reason="torch is optional (pip install torch==2.13.0 for the CPU build)")
    doc = tg.train(["torch-cpu"], replace(TINY, steps=35))
    r = _by(doc["plans"][0], "torch-cpu")
    assert r["status"] == "pass", r["reason"]
    assert r["sample"].startswith(tg.PROMPT) and r["val_loss"] < r["losses"][0]


def test_the_command_writes_results_csv_markdown_and_charts(capsys, tmp_path):
    code = main(["train", "gpt", "-b", "numpy", "--steps", "70", "--layers", "1", "--heads", "2",
                 "--channels", "8", "--context", "8", "--batch", "2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0 and "train gpt L=1, H=2, C=8, T=8, B=2" in out and "samples" in out
    doc = json.loads((tmp_path / "train_gpt.json").read_text())
    assert doc["schema"] == "kernel-rosetta-train" and doc["model"] == "gpt" and doc["env"]["cpu_model"]
    r = doc["plans"][0]["runs"][0]
    assert r["breakdown"] and {c["phase"] for c in r["calls"].values()} == {"forward", "backward", "update"}
    assert (tmp_path / "train_gpt.csv").read_text().startswith("plan,backend,status")
    md = (tmp_path / "train_gpt.md").read_text()
    assert "unigram baseline" in md and "| numpy |" in md and "```text\nMENENIUS:" in md
    for stem in ("loss_gpt", "step_time_gpt", "breakdown_gpt"):
        assert (tmp_path / "charts" / f"{stem}.png").exists() and (tmp_path / "charts" / f"{stem}.svg").exists()


@pytest.mark.parametrize("argv,msg", [
    (["train", "gpt", "--channels", "30", "--heads", "4"], "channels (30) must be a multiple of heads (4)"),
    (["train", "gpt", "--context", "0"], "bad --context 0"),
    (["train", "gpt", "--hidden", "8"], "--hidden is for `train mlp`"),
    (["train", "gpt", "-b", "fortran"], "unknown backend 'fortran'"),
])
def test_bad_gpt_usage_is_one_line_and_exit_2(capsys, argv, msg):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1


def test_the_committed_run_learned_the_corpus_and_every_backend_agreed():
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "results" / "intel-xeon-2core" / "train_gpt.json"
    doc = json.loads(path.read_text())
    base = doc["corpus"]["unigram_baseline"]
    main_plan = doc["plans"][0]
    ran = [r for r in main_plan["runs"] if r["status"] != "skip"]
    assert {r["backend"] for r in ran} >= {"numpy", "mojo"}
    for r in ran:
        assert r["status"] == "pass" and r["agreement"]["ok"], (r["backend"], r["reason"])
        assert r["val_loss"] < base - 1.0, (r["backend"], r["val_loss"], base)     # clearly below the baseline
        assert r["sample"].startswith(doc["sampling"]["prompt"])
    python = _by(doc["plans"][1], "python")
    assert python["status"] == "pass" and python["steps"] == tg.PYTHON_STEPS


def test_poison_fills_activations_and_gradients_and_spares_weights_moments_and_batch():
    from harness import backends as registry
    ops = registry.get("numpy").ops()
    m = gpt.GPT.build(ops, TINY, lambda p: "numpy", gpt.initial_weights(TINY))
    m.load_batch(*text.batches(CORPUS.train, TINY.batch, TINY.context, 1, 0)[0])
    m.forward_backward()
    m.poison()
    assert np.isnan(ops.download(m.buf["logits"])).all() and np.isnan(ops.download(m.buf["d.wte"])).all()
    assert np.isnan(ops.download(m.buf["h0.att"])).all()
    assert np.isfinite(ops.download(m.buf["wte"])).all() and not np.isnan(ops.download(m.buf["m.wte"])).any()
    assert (ops.download(m.buf["idx"]) >= 0).all()
    m.forward_backward()                                    # every call writes its outputs again
    assert all(np.isfinite(g).all() for g in m.gradients().values())
    m.close()


class _CostedOps:
    """The Mojo op layer with a made-up clock: time(fn) runs fn and returns the cost table's
    seconds for fn's (primitive, variant), recording which call site was timed, in order.
    A whole pass (GPT.forward_backward) costs the sum over its calls, plus `penalty` for
    each call that is not on its primitive's last candidate (the workers it lets sleep)."""

    def __init__(self, ops, cost, last=None, penalty=0.0):
        self._ops, self._cost, self._last, self._penalty, self.timed = ops, cost, last or {}, penalty, []

    def __getattr__(self, name):
        return getattr(self._ops, name)

    def call(self, primitive, variant, buffers, scalars=None):
        c = self._ops.call(primitive, variant, buffers, scalars)
        c.kr_variant = (primitive, variant)
        return c

    def time(self, fn):
        fn()
        owner = fn.__self__
        if isinstance(owner, gpt.GPT):
            pv = [owner.calls[s.name].kr_variant for s in owner.specs if s.phase != "update"]
            return sum(self._cost(p, v) + (self._penalty if p in self._last and v != self._last[p] else 0)
                       for p, v in pv)
        primitive, variant = owner.kr_variant
        self.timed.append((primitive, variant))
        return self._cost(primitive, variant)


def _tuned(mojo_backend, penalty):
    from harness import backends as registry
    b = registry.get("mojo")
    cands = {p: b.variants(p)[-3:] for p in ("gelu", "layernorm", "matmul")}
    cost = lambda p, v: {0: 3.0, 1: 1.0, 2: 1.5}[cands[p].index(v)] if p in cands else 1.0
    ops = _CostedOps(b.ops(), cost, {p: c[-1] for p, c in cands.items()}, penalty)
    m = gpt.GPT.build(ops, TINY, lambda p: b.variants(p)[-1], gpt.initial_weights(TINY))
    m.load_batch(*text.batches(CORPUS.train, TINY.batch, TINY.context, 1, 0)[0])
    m.tune(lambda p: cands.get(p, [b.variants(p)[-1]]), rounds=3)
    return m, ops, cands, [s for s in m.specs if s.primitive in cands]


def test_tuning_times_candidates_inside_step_order_passes_and_keeps_the_fastest(mojo_backend):
    """GPT.tune runs whole forward+backward passes: each pass times every tunable site once,
    in step order; a candidate more than PRUNE times slower than the best is timed in the
    first round only; the choice is the median's minimum, here the middle of three
    candidates (never the default last one), and AdamW is never timed. The whole-pass
    check agrees here (no penalty), so the choice stands."""
    m, ops, cands, tuned = _tuned(mojo_backend, penalty=0.0)
    assert all(m.site_variants[s.name] == cands[s.primitive][1] for s in tuned)
    assert m.check["kept"] == "tuned" and m.check["tuned_s"] < m.check["last_s"]
    assert all(p in cands for p, _ in ops.timed)                     # single-candidate sites are not timed
    passes = 3 * 3                                                   # rounds x the widest candidate list
    assert len(ops.timed) == passes * len(tuned)
    first_round = ops.timed[:3 * len(tuned)]
    assert {v for _, v in first_round} == {v for c in cands.values() for v in c}
    assert all(v != cands[p][0] for p, v in ops.timed[3 * len(tuned):])    # pruned: 3.0 > 2 x 1.0
    order = [s.primitive for s in tuned]
    assert [p for p, _ in ops.timed[:len(tuned)]] == order           # one pass: the sites in step order
    assert np.isfinite(ops.download(m.buf["logits"])).all()          # buffers as the chosen variants write it
    m.close()


def test_tuning_falls_back_to_the_last_variants_when_whole_passes_say_so(mojo_backend):
    """Each tuned call is faster alone, but every one of them costs the pass more than it
    saves (the workers it lets sleep): the whole-pass check keeps the last variants."""
    m, ops, cands, tuned = _tuned(mojo_backend, penalty=1.0)
    assert m.check["kept"] == "last" and m.check["last_s"] < m.check["tuned_s"]
    assert all(m.site_variants[s.name] == cands[s.primitive][-1] for s in tuned)
    assert np.isfinite(ops.download(m.buf["logits"])).all()
    m.close()
