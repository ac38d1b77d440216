"""Defects found in review, each pinned by a test that failed before its fix: memory projections
under autocast, train_step's metrics flag, Φ's components (range, gradients, cached layout),
weight decay by module type; plus causality on the probability and multi-token cache paths
and bf16 autocast on CPU."""
import math

import pytest
import torch
import torch.nn as nn

from infinito.config import InfinitoConfig
from infinito.metrics import phi_components
from infinito.model import CausalSelfAttention, Infinito
from infinito.training import make_optimizer, train_step

COMPONENTS = ("coherence", "integration", "complexity", "diversity")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def small_model(**kw):
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, context=32, d_model=32, n_layers=2, n_heads=4, dropout=0.0, memory_slots=8)
    cfg.update(kw)
    return Infinito(InfinitoConfig(**cfg))


def batches(n, B=4, T=32, vocab=50, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (B, T), generator=g) for _ in range(n)]


def with_memory(model):
    """A few training steps: the memory then holds slots, so its read path runs."""
    opt = make_optimizer(model, 1e-2)
    for x in batches(3):
        train_step(model, opt, x, x.roll(-1, 1))
    assert model.memory.utilisation > 0
    return model


# ----------------------------------------------------------------------------- memory under autocast

@pytest.mark.parametrize("first_bf16", [True, False])
def test_reused_memory_projections_follow_the_autocast_state(first_bf16):
    """No-grad forwards reuse the projected slots; switching autocast on or off between two of
    them must give what a fresh projection gives (before the fix: a dtype mismatch error)."""
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


# ----------------------------------------------------------------------------- train_step's metrics flag

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


# ----------------------------------------------------------------------------- Φ's components

def causal_probs(logits):
    """(B, H, T, S) scores -> probabilities where query t sees keys 0..S-T+t."""
    T, S = logits.shape[-2:]
    mask = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
    return torch.softmax(logits.masked_fill(~mask, float("-inf")), dim=-1)


def adversarial_states(B=2, T=12, C=16):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(B, T, C, generator=g)
    v = torch.randn(C, generator=g)
    t = torch.arange(T, dtype=torch.float).view(1, T, 1)
    angle = t * 0.05  # a slow rotation in one plane: consecutive centred states nearly parallel
    e0, e1 = torch.eye(C)[0], torch.eye(C)[1]
    return {
        "random": base,
        "tiny": base * 1e-7,
        "huge": base * 1e4,
        "zeros": torch.zeros(B, T, C),
        "aligned": v * (1 + t),                   # one direction: complexity 0
        "alternating": v * (-1.0) ** t,           # centred states flip every step: coherence 0
        "rotation": 5 * (torch.cos(angle) * e0 + torch.sin(angle) * e1),
        "opposite halves": torch.where(t < T // 2, v, -v).expand(B, T, C),
        "one position": base[:, :1],
    }


def adversarial_attention(B=2, H=3, T=12, past=0):
    S = past + T
    g = torch.Generator().manual_seed(1)
    first = torch.full((B, H, T, S), -30.0)
    first[..., 0] = 30.0
    diag = torch.full((B, H, T, S), -30.0)
    diag[..., torch.arange(T), torch.arange(T) + past] = 30.0
    return {
        "uniform": causal_probs(torch.zeros(B, H, T, S)),
        "peaked on the first key": causal_probs(first),
        "peaked on the newest key": causal_probs(diag),
        "random": causal_probs(3 * torch.randn(B, H, T, S, generator=g)),
        # breaks the causal contract: mass on keys a query may not see
        "non-causal uniform": torch.full((B, H, T, S), 1.0 / S),
        "non-causal on a future key": torch.softmax(diag.roll(1, dims=-1), dim=-1),
    }


def assert_in_unit_interval(parts, where, tol=1e-6):
    for k in COMPONENTS:
        v = parts[k]
        assert torch.isfinite(v).all(), (where, k, v)
        assert float(v.min()) >= -tol and float(v.max()) <= 1 + tol, (where, k, v)


def test_phi_components_stay_in_the_unit_interval_on_adversarial_inputs():
    """No clamp hides a component that leaves [0, 1]: every input here, extreme or contract-breaking,
    must land inside by the formulas themselves; the known edges are reached where they should be."""
    states = adversarial_states()
    for s_name, h in states.items():
        T = h.size(1)
        for past in (0, 5):
            for a_name, attn in adversarial_attention(T=T, past=past).items():
                parts = phi_components(h, attn)
                assert_in_unit_interval(parts, (s_name, a_name, past))
                if T > 1 and a_name == "uniform":
                    assert torch.allclose(parts["diversity"], torch.ones(2), atol=1e-5), (s_name, past)
                if T > 1 and a_name.startswith("peaked"):
                    assert float(parts["diversity"].max()) < 1e-6, (s_name, a_name, past)
        assert_in_unit_interval(phi_components(h, None), (s_name, None))
    edges = {name: phi_components(states[name], None) for name in ("zeros", "aligned", "alternating")}
    assert torch.allclose(edges["zeros"]["complexity"], torch.ones(2))
    assert float(edges["aligned"]["complexity"].abs().max()) < 1e-6
    assert float(edges["alternating"]["coherence"].abs().max()) < 1e-6


def test_phi_components_are_bounded_for_a_model_reading_its_cache():
    """metrics=True on a chunk fed after a cache: the attention rows see past keys too."""
    model = with_memory(small_model()).eval()
    x = batches(1, B=2, T=32)[0]
    with torch.no_grad():
        cache = model(x[:, :20], use_cache=True).cache
        m = model(x[:, 20:], cache=cache, metrics=True).metrics
    for k in COMPONENTS:
        assert 0.0 <= float(m[k]) <= 1.0, k


def test_diversity_normalises_by_the_keys_each_row_can_see():
    """With P cached positions in front, query t sees P + t + 1 keys; attending evenly to two of
    them is log 2 / log(P + t + 1) of the most it could spread. (Before the fix the normaliser
    ignored P, so rows counted as more diverse than possible and the clamp cut them to 1.)"""
    B, H, T, P, C = 1, 2, 6, 4, 8
    S = P + T
    scores = torch.full((B, H, T, S), -1e4)
    scores[..., :2] = 0.0  # every query: half on key 0, half on key 1 (both always visible)
    parts = phi_components(torch.randn(B, T, C), causal_probs(scores))
    expected = sum(math.log(2) / math.log(P + t + 1) for t in range(T)) / T
    assert float(parts["diversity"]) == pytest.approx(expected, rel=1e-5)


def grad_of(component, h, attn_scores=None):
    h = h.clone().requires_grad_(True)
    scores = None if attn_scores is None else attn_scores.clone().requires_grad_(True)
    attn = None if scores is None else causal_probs(scores)
    phi_components(h, attn)[component].sum().backward()
    return (h.grad if scores is None else scores.grad)


@pytest.mark.parametrize("past", [0, 7])
@pytest.mark.parametrize("shape", ["near uniform", "near one-hot"])
def test_diversity_has_a_gradient_at_the_edges(past, shape):
    """Attention close to its extremes still receives a finite, nonzero gradient (a clamp on the
    component made it exactly 0 as soon as the value touched or crossed the edge)."""
    g = torch.Generator().manual_seed(2)
    B, H, T = 2, 2, 8
    noise = torch.randn(B, H, T, past + T, generator=g)
    scores = 0.05 * noise if shape == "near uniform" else 8.0 * torch.eye(T, past + T) + 0.05 * noise
    d = phi_components(torch.randn(B, T, 16, generator=g), causal_probs(scores))["diversity"]
    assert (d > 0.95).all() if shape == "near uniform" else (d < 0.05).all()
    grad = grad_of("diversity", torch.randn(B, T, 16, generator=g), scores)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("name,component", [("rotation", "coherence"), ("alternating", "coherence"),
                                            ("aligned", "complexity"), ("opposite halves", "integration"),
                                            ("tiny", "complexity"), ("huge", "coherence")])
def test_state_components_have_a_gradient_near_their_edges(name, component):
    """Nudged off an edge (an exact extremum is a stationary point), each component still passes a
    finite, nonzero gradient to the hidden states."""
    h = adversarial_states()[name]
    h = h + 1e-2 * h.abs().max().clamp_min(1e-6) * torch.randn(h.shape, generator=torch.Generator().manual_seed(3))
    grad = grad_of(component, h)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


# ----------------------------------------------------------------------------- weight decay by module type

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


# ----------------------------------------------------------------------------- causality on every attention path

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


# ----------------------------------------------------------------------------- bf16 autocast on CPU

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
