"""INFINITO: causality on every attention path, metric bounds, gradients, memory, cache, the
training step (weight decay by module type, the metrics flag) and bf16 autocast on CPU."""
import math

import pytest
import torch
import torch.nn as nn

from infinito.config import InfinitoConfig
from infinito.metrics import WEIGHTS, phi_loss
from infinito.model import CausalSelfAttention, Infinito
from infinito.training import make_optimizer, train_step

COMPONENTS = tuple(WEIGHTS)  # Φ's components

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def small_model(**kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, context=32, d_model=32, n_layers=2, n_heads=4, dropout=0.0, memory_slots=8)
    cfg.update(kw)
    return Infinito(InfinitoConfig(**cfg))


def batches(n, B=4, T=32, vocab=50, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (B, T), generator=g) for _ in range(n)]


def trained_a_little(model, steps=3):
    opt = make_optimizer(model, 1e-2)
    for x in batches(steps, T=model.cfg.context, vocab=model.cfg.vocab_size):
        train_step(model, opt, x, x.roll(-1, 1))
    return model


def with_memory(model):
    """Trained a little, so that the memory holds slots and its read path runs."""
    trained_a_little(model)
    assert model.memory.utilisation > 0
    return model


@pytest.mark.parametrize("with_memory", [False, True])
def test_causal_mask(with_memory):
    model = small_model()
    if with_memory:
        trained_a_little(model)
        assert model.memory.utilisation > 0
    model.eval()
    x = torch.randint(0, 50, (2, 32), generator=torch.Generator().manual_seed(0))
    t = 13
    x2 = x.clone()
    x2[:, t + 1:] = (x2[:, t + 1:] + 7) % 50
    a, b = model(x).logits, model(x2).logits
    assert torch.equal(a[:, :t + 1], b[:, :t + 1])
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


def test_metric_bounds_and_batch_invariance():
    model = trained_a_little(small_model()).eval()
    x = torch.randint(0, 50, (3, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        m = model(x, metrics=True).metrics
    assert 0.0 <= float(m["phi"]) <= 10.0
    assert 0.0 < float(m["consciousness"]) <= 1.0  # memory is in use after training, so C is positive
    assert 0.0 < m["memory_util"] <= 1.0
    for k in COMPONENTS:
        assert 0.0 <= float(m[k]) <= 1.0
    with torch.no_grad():
        doubled = model(torch.cat([x, x]), metrics=True).metrics
    assert float(doubled["phi"]) == pytest.approx(float(m["phi"]), abs=1e-5)


def test_consciousness_is_zero_with_empty_memory():
    model = small_model().eval()
    m = model(torch.zeros(1, 8, dtype=torch.long), metrics=True).metrics
    assert float(m["consciousness"]) == 0.0 and m["memory_util"] == 0.0


def test_phi_loss_sends_gradient_into_parameters():
    model = small_model(phi_low=9.0, phi_high=10.0)  # a band a fresh model is far below
    x = torch.randint(0, 50, (2, 32))
    m = model(x, metrics=True).metrics
    assert m["loss_phi"].item() > 0
    m["loss_phi"].backward()
    grads = [p.grad for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert len(grads) > 5
    assert model.tok_emb.weight.grad is not None and model.tok_emb.weight.grad.abs().sum() > 0


def test_phi_loss_values_target_and_bound():
    phi = torch.tensor([0.0, 4.5, 5.5, 10.0])
    assert float(phi_loss(phi[1:2], 3, 6)) == 0.0           # at the target (the band's midpoint)
    assert float(phi_loss(phi[2:3], 3, 6)) == 1.0           # inside the band, 1 from the target
    assert float(phi_loss(phi[:1], 3, 6)) == 4.5 + 3.0      # below: distance to target + to band
    assert float(phi_loss(phi[3:], 3, 6)) == 5.5 + 4.0
    assert float(phi_loss(phi[2:3], 3, 6, target=5.5)) == 0.0
    with pytest.raises(ValueError, match="outside the band"):
        phi_loss(phi, 3, 6, target=7.0)


@pytest.mark.parametrize("phi_value", [2.0, 4.0, 5.0, 7.0])
def test_phi_loss_has_gradient_everywhere_pointing_at_the_target(phi_value):
    """Inside the band too: the pull toward Φ* is what makes the PHI mode act while Φ is healthy."""
    phi = torch.tensor([phi_value], requires_grad=True)
    phi_loss(phi, 3.0, 6.0, target=4.5).backward()
    assert phi.grad.abs().item() >= 1.0
    assert torch.sign(phi.grad).item() == (1.0 if phi_value > 4.5 else -1.0)  # descent moves Φ toward 4.5


def test_phi_loss_inside_the_band_reaches_the_parameters():
    model = small_model(phi_low=0.0, phi_high=10.0, phi_target=9.0)  # a fresh model is in this band
    m = model(torch.randint(0, 50, (2, 32)), metrics=True).metrics
    assert 0.0 < m["phi"].item() < 10.0 and m["loss_phi"].item() > 0
    m["loss_phi"].backward()
    assert model.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_phi_training_moves_phi():
    model = small_model(phi_low=0.0, phi_high=1.0)
    x = torch.randint(0, 50, (4, 32), generator=torch.Generator().manual_seed(3))
    before = model.eval()(x, metrics=True).metrics["phi"].item()
    opt = make_optimizer(model, 1e-2)
    for _ in range(20):
        train_step(model, opt, x, x.roll(-1, 1), w_text=0.0, w_phi=1.0)
    after = model.eval()(x, metrics=True).metrics["phi"].item()
    assert after < before - 0.5


def test_memory_is_written_during_training_and_respects_threshold():
    model = small_model()
    assert model.memory.utilisation == 0.0
    trained_a_little(model, steps=3)
    assert model.memory.utilisation == pytest.approx(3 / 8)
    model.memory.threshold = 10.5  # no Φ can reach it
    model.memory.clear()
    trained_a_little(model, steps=3)
    assert model.memory.utilisation == 0.0


def test_full_memory_replaces_lowest_priority_only():
    model = small_model(memory_slots=2, memory_decay=1.0)
    mem = model.memory
    v = torch.ones(32)
    assert mem.write(v, 4.0) and mem.write(v * 2, 5.0)
    assert not mem.write(v * 3, 3.5)        # lower than both: dropped
    assert mem.write(v * 4, 6.0)            # replaces the 4.0 slot
    assert sorted(mem.priority.tolist()) == [5.0, 6.0]


def test_priority_decay_lets_recent_batches_into_a_full_memory():
    mem = small_model(memory_slots=2, memory_decay=0.9).memory
    v = torch.ones(32)
    assert mem.write(v, 8.0) and mem.write(v * 2, 8.0)  # full of high-priority early batches
    assert not mem.write(v * 3, 5.0)                     # 8·0.9^k has not yet fallen under 5
    accepted = [mem.write(v * 4, 5.0) for _ in range(6)]
    assert any(accepted)                                 # ... a few steps later it has
    assert mem.priority.max().item() < 8.0


def memory_writes_per_step(model, steps=60) -> list[bool]:
    """Train on random tokens; for each step, whether the memory's contents changed."""
    opt = make_optimizer(model, 1e-2)
    g = torch.Generator().manual_seed(1)
    written = []
    for _ in range(steps):
        x = torch.randint(0, 50, (4, 32), generator=g)
        before = model.memory.keys.clone()
        train_step(model, opt, x, x.roll(-1, 1))
        written.append(not torch.equal(before, model.memory.keys))
    return written


def test_memory_keeps_accepting_writes_late_in_training():
    """The memory follows the model: long after it filled up (and while Φ falls, as training
    lowers it), new batches still replace old slots."""
    model = small_model(memory_slots=4, memory_threshold=0.0)
    written = memory_writes_per_step(model)
    assert model.memory.utilisation == 1.0
    assert sum(written[-20:]) >= 5                      # still writing in the last third
    frozen = memory_writes_per_step(small_model(memory_slots=4, memory_threshold=0.0, memory_decay=1.0))
    assert sum(frozen[-20:]) < sum(written[-20:])       # without decay it accepts fewer (the old rule)


def test_train_step_changes_parameters():
    model = small_model()
    before = [p.detach().clone() for p in model.parameters()]
    trained_a_little(model, steps=1)
    changed = sum(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    assert changed > len(before) // 2


def test_kv_cache_matches_full_forward():
    model = trained_a_little(small_model()).eval()
    x = torch.randint(0, 50, (2, 20))
    full = model(x).logits
    out = model(x[:, :7], use_cache=True)
    pieces = [out.logits]
    for t in range(7, 20):
        out = model(x[:, t:t + 1], cache=out.cache, use_cache=True)
        pieces.append(out.logits)
    assert torch.allclose(torch.cat(pieces, dim=1), full, atol=1e-5)


def test_context_overflow_is_an_error():
    with pytest.raises(ValueError, match="context"):
        small_model()(torch.zeros(1, 33, dtype=torch.long))


def test_invalid_config():
    with pytest.raises(ValueError, match="divisible"):
        InfinitoConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown"):
        InfinitoConfig.from_dict({"d_model": 32, "bogus": 1})


def test_reused_memory_projections_follow_every_change():
    """Without autograd the projected memory slots are reused; a write, a weight update or a
    clear must still show in the output at once."""
    torch.manual_seed(0)
    model = Infinito(InfinitoConfig(vocab_size=64, context=16, d_model=32, n_layers=1, n_heads=2, memory_slots=4,
                                    memory_threshold=0.0)).eval()
    x = torch.randint(0, 64, (1, 8))

    def out():
        with torch.no_grad():
            return model(x).logits

    model.memory.write(torch.randn(32), 1.0)
    first = out()
    assert torch.equal(out(), first)  # reused: same result
    model.memory.write(torch.randn(32), 1.0)
    second = out()
    assert not torch.equal(second, first)
    with torch.no_grad():
        model.memory.k.weight.add_(0.5)
    third = out()
    assert not torch.equal(third, second)
    with torch.enable_grad():
        assert torch.allclose(model(x).logits, third, atol=1e-6)  # the uncached path agrees
    model.memory.clear()
    assert not torch.equal(out(), third)


@pytest.mark.parametrize("first_bf16", [True, False])
def test_reused_memory_projections_follow_the_autocast_state(first_bf16):
    """No-grad forwards reuse the projected slots; switching autocast on or off between two of
    them must give what a fresh projection gives (a stale projection fails with a dtype mismatch)."""
    model = with_memory(small_model()).eval()
    x = batches(1, B=2, T=16)[0]

    def forward(bf16, grad):
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return model(x).logits.detach()

    for bf16 in (first_bf16, not first_bf16, first_bf16):
        reused = forward(bf16, grad=False)
        fresh = forward(bf16, grad=True)  # with autograd the projections are never reused
        assert reused.dtype == fresh.dtype
        assert torch.equal(reused, fresh)


def test_metrics_flag_does_not_change_how_the_model_evolves():
    runs = []
    for metrics in (True, False):
        model = small_model()
        opt = make_optimizer(model, 1e-2)
        for x in batches(4):
            stats = train_step(model, opt, x, x.roll(-1, 1), metrics=metrics)
            assert ("phi" in stats) == metrics
        runs.append(model.state_dict())
    with_metrics, without = runs
    assert with_metrics["memory.used"].any()  # the comparison covers a memory that was written
    assert with_metrics.keys() == without.keys()
    for k in with_metrics:
        assert torch.equal(with_metrics[k], without[k]), k


def test_phi_components_are_bounded_for_a_model_reading_its_cache():
    """metrics=True on a chunk fed after a cache: the attention rows see past keys too."""
    model = with_memory(small_model()).eval()
    x = batches(1, B=2, T=32)[0]
    with torch.no_grad():
        cache = model(x[:, :20], use_cache=True).cache
        m = model(x[:, 20:], cache=cache, metrics=True).metrics
    for k in COMPONENTS:
        assert 0.0 <= float(m[k]) <= 1.0, k


class Renamed(nn.Module):
    """Names chosen to fool a substring rule (an embedding without 'emb', a Linear with it), and
    an output head tied to the embedding, which must stay undecayed like the embedding."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(10, 8)
        self.embedding_mixer = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.head = nn.Linear(8, 10, bias=False)
        self.head.weight = self.table.weight


def decay_groups(model):
    opt = make_optimizer(model, 1e-3, weight_decay=0.1)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    listed = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(listed) == len(set(listed)), "a parameter is in two groups"
    assert set(listed) == {id(p) for p in model.parameters()}, "every parameter exactly once"
    return decayed, plain


@pytest.mark.parametrize("build", [Renamed, lambda: small_model()])
def test_weight_decay_follows_module_types_not_names(build):
    model = build()
    decayed, plain = decay_groups(model)
    never = {id(p) for m in model.modules() if isinstance(m, (nn.Embedding, nn.LayerNorm)) for p in m.parameters()}
    never |= {id(m.bias) for m in model.modules() if isinstance(m, nn.Linear) and m.bias is not None}
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    assert never and never <= plain
    assert linear_weights - never and linear_weights - never <= decayed
    assert decayed == linear_weights - never  # nothing else is decayed


def changed_after(x, t, vocab=50):
    x2 = x.clone()
    x2[:, t + 1:] = (x2[:, t + 1:] + 7) % vocab
    return x2


def test_causality_on_the_probability_path(monkeypatch):
    """metrics=True with autograd: the last layer computes its attention from explicit probabilities
    (the Φ loss differentiates through them), with its own mask."""
    model = with_memory(small_model()).eval()
    differentiable = []
    original = CausalSelfAttention._probs

    def spy(q, k, mask):
        p = original(q, k, mask)
        differentiable.append(p.requires_grad)
        return p

    monkeypatch.setattr(CausalSelfAttention, "_probs", staticmethod(spy))
    x, t = batches(1, B=2, T=32)[0], 13
    a = model(x, metrics=True).logits
    b = model(changed_after(x, t), metrics=True).logits
    assert differentiable == [True, True]  # the path under test really ran
    assert torch.equal(a[:, :t + 1], b[:, :t + 1])
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])


@pytest.mark.parametrize("metrics", [False, True])
def test_causality_when_several_tokens_follow_a_cache(metrics):
    model = with_memory(small_model()).eval()
    x, P, t = batches(1, B=2, T=32)[0], 10, 6  # a 22-token chunk after 10 cached positions

    def chunk_logits(ids):
        cache = model(ids[:, :P], use_cache=True).cache
        return model(ids[:, P:], cache=cache, use_cache=True, metrics=metrics).logits.detach()

    a = chunk_logits(x)
    b = chunk_logits(changed_after(x, P + t))
    assert torch.equal(a[:, :t + 1], b[:, :t + 1])
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])
    assert torch.allclose(a, model(x).logits[:, P:].detach(), atol=1e-5)  # and it is the full forward's answer


def test_forward_under_bf16_autocast_on_cpu():
    model = with_memory(small_model()).eval()
    x = batches(1, B=2, T=32)[0]
    full = model(x, x.roll(-1, 1), metrics=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, x.roll(-1, 1), metrics=True)
    assert low.logits.dtype == torch.bfloat16
    assert torch.isfinite(low.loss) and abs(low.loss.item() - full.loss.item()) < 0.05
    assert abs(low.metrics["phi"].item() - full.metrics["phi"].item()) < 0.1
    for k in COMPONENTS:
        assert 0.0 <= low.metrics[k].item() <= 1.0, k
    low.metrics["loss_phi"].backward()  # Φ's graph runs through bf16 activations too
    assert torch.isfinite(model.blocks[-1].attn.qkv.weight.grad).all()


def test_train_step_under_bf16_autocast_on_cpu():
    model = small_model()
    opt = make_optimizer(model, 1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for x in batches(6, T=32, seed=4) * 2:  # twice over the same batches: the loss must come down
        stats = train_step(model, opt, x, x.roll(-1, 1), w_phi=0.1, bf16=True)
        assert all(math.isfinite(v) for v in stats.values())
        losses.append(stats["loss_text"])
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast leaves the weights fp32
    assert sum(not torch.equal(b, p) for b, p in zip(before, model.parameters())) > len(before) // 2
    assert model.memory.utilisation > 0
    assert sum(losses[6:]) < sum(losses[:6])
