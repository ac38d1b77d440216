"""Φ's components (infinito/metrics.py, `phi_components`): inside [0, 1] by their formulas on
extreme and contract-breaking inputs, diversity normalised by the keys each query row can see,
and a finite, nonzero gradient near every edge."""
import math

import pytest
import torch

from infinito.metrics import WEIGHTS, phi_components

COMPONENTS = tuple(WEIGHTS)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


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




def test_diversity_normalises_by_the_keys_each_row_can_see():
    """With P cached positions in front, query t sees P + t + 1 keys; attending evenly to two of
    them is log 2 / log(P + t + 1) of the most it could spread. (A normaliser that ignored P would
    count rows as more diverse than possible, and a clamp would then cut them to 1.)"""
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
    component would make it exactly 0 as soon as the value touched or crossed the edge)."""
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
