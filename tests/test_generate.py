"""Sampling rules, cached decoding and `python generate.py` (tiny preset), including --agent and bad input."""
import json
import math
import re
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

import generate as cli
import stages.generation.adapt as adapt
import stages.generation.sampling as sampling
from conftest import file_digest
from infinito.config import InfinitoConfig
from infinito.generation import default_keep, generate
from infinito.model import Infinito
from infinito.sampling import (SamplingConfig, apply_repetition_penalty, draw, next_token_probs, process_logits,
                               sample_next, top_k_filter, top_p_filter)

NEG = float("-inf")


# ----------------------------------------------------------------------------- fixtures

# base_dir and rl_dir: tests/conftest.py


@pytest.fixture(scope="module")
def base_model(base_dir):
    model, tok = sampling.load_base_model(base_dir / "base.pt", torch.device("cpu"))
    return model, tok


def run_cli(*argv):
    return cli.main([str(a) for a in argv])


# ----------------------------------------------------------------------------- repetition penalty

def test_repetition_penalty_divides_positive_multiplies_negative_once_per_token():
    logits = torch.tensor([2.0, -2.0, 1.0, 0.5, -1.0])
    context = torch.tensor([0, 1, 0, 0, 1, 1])      # token 0 three times, token 1 three times; 2, 3, 4 never
    out = apply_repetition_penalty(logits, context, 2.0)
    assert torch.equal(out, torch.tensor([1.0, -4.0, 1.0, 0.5, -1.0]))   # once, not 2**3
    assert torch.equal(apply_repetition_penalty(logits, context, 1.0), logits)
    # a penalty below 1 rewards repeats by the same rule
    assert torch.equal(apply_repetition_penalty(logits, context, 0.5), torch.tensor([4.0, -1.0, 1.0, 0.5, -1.0]))


def test_repetition_penalty_rows_are_independent():
    logits = torch.tensor([[3.0, 3.0, -3.0], [3.0, 3.0, -3.0]])
    context = torch.tensor([[0, 0], [1, 2]])
    out = apply_repetition_penalty(logits, context, 3.0)
    assert torch.equal(out, torch.tensor([[1.0, 3.0, -3.0], [3.0, 1.0, -9.0]]))


def test_penalty_comes_before_temperature_and_top_k():
    logits = torch.tensor([[4.0, 3.0, 1.0]])
    seen = torch.tensor([[True, False, False]])
    cfg = SamplingConfig(temperature=0.5, top_k=1, top_p=1.0, rep_penalty=2.0)
    # penalised: [2, 3, 1]; / 0.5: [4, 6, 2]; top-1 keeps token 1 only
    assert torch.equal(process_logits(logits, cfg, seen), torch.tensor([[NEG, 6.0, NEG]]))
    greedy = SamplingConfig(temperature=0, rep_penalty=2.0)
    assert sample_next(logits, greedy, seen=seen).tolist() == [1]
    assert sample_next(logits, greedy).tolist() == [0]


# ----------------------------------------------------------------------------- top-k, top-p, temperature

def test_top_k_keeps_every_token_tied_with_the_kth():
    logits = torch.tensor([[1.0, 3.0, 3.0, 2.0, 0.0]])
    assert torch.equal(top_k_filter(logits, 1), torch.tensor([[NEG, 3.0, 3.0, NEG, NEG]]))  # the tie survives
    assert torch.equal(top_k_filter(logits, 2), torch.tensor([[NEG, 3.0, 3.0, NEG, NEG]]))
    assert torch.equal(top_k_filter(logits, 3), torch.tensor([[NEG, 3.0, 3.0, 2.0, NEG]]))
    assert torch.equal(top_k_filter(logits, 0), logits)      # 0 = off
    assert torch.equal(top_k_filter(logits, 99), logits)
    tied = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0]])
    assert torch.isfinite(top_k_filter(tied, 2)).tolist() == [[False, True, True, True, False]]


def probs_logits(*p):
    return torch.tensor([p]).log()


def kept(logits):
    return torch.isfinite(logits)[0].tolist()


def test_top_p_keeps_the_token_that_crosses_p():
    logits = probs_logits(0.5, 0.3, 0.15, 0.05)
    assert kept(top_p_filter(logits, 0.4)) == [True, False, False, False]    # 0.5 alone reaches 0.4
    assert kept(top_p_filter(logits, 0.6)) == [True, True, False, False]     # 0.5 < 0.6: the 0.3 crosses
    assert kept(top_p_filter(logits, 0.9)) == [True, True, True, False]      # 0.8 < 0.9: the 0.15 crosses
    assert kept(top_p_filter(logits, 0.96)) == [True, True, True, True]
    assert kept(top_p_filter(logits, 1.0)) == [True, True, True, True]       # 1 = off
    # exactly reaching p is enough (the rounding of 0.5 + 0.3 does not pull in the 0.15)
    assert kept(top_p_filter(logits, 0.8)) == [True, True, False, False]
    assert kept(top_p_filter(logits, 0.5)) == [True, False, False, False]
    # the most likely token always survives, however small p
    assert kept(top_p_filter(logits, 1e-9)) == [True, False, False, False]


def test_top_p_keeps_ties_with_the_crossing_token_and_ignores_order():
    logits = probs_logits(0.25, 0.4, 0.1, 0.25)
    # 0.4 then one 0.25 crosses 0.5; the other 0.25 is tied with it and kept too; the 0.1 goes
    assert kept(top_p_filter(logits, 0.5)) == [True, True, False, True]
    assert kept(top_p_filter(logits.flip(-1), 0.5)) == [True, False, True, True]


def test_top_p_sees_the_distribution_left_by_top_k():
    logits = probs_logits(0.4, 0.3, 0.2, 0.1)
    cfg = SamplingConfig(temperature=1.0, top_k=2, top_p=0.55)
    # after top-2 the renormalised probabilities are 4/7, 3/7: 4/7 >= 0.55 alone
    assert kept(process_logits(logits, cfg)) == [True, False, False, False]
    cfg = SamplingConfig(temperature=1.0, top_k=0, top_p=0.55)
    assert kept(process_logits(logits, cfg)) == [True, True, False, False]


def test_temperature_scales_the_distribution_and_zero_is_greedy():
    logits = torch.tensor([[1.0, 2.0, 0.5, 2.0]])
    for t in (0.5, 1.0, 2.0):
        probs = next_token_probs(logits, SamplingConfig(temperature=t, top_k=0, top_p=1.0))
        assert torch.allclose(probs, torch.softmax(logits / t, -1))
    cold = next_token_probs(logits, SamplingConfig(temperature=0.1, top_k=0, top_p=1.0))
    warm = next_token_probs(logits, SamplingConfig(temperature=10.0, top_k=0, top_p=1.0))
    assert cold[0, 1] > 0.49 and warm.max() - warm.min() < 0.05
    greedy = SamplingConfig(temperature=0.0)
    # ties go to the lowest id, whatever top-k / top-p say
    assert torch.equal(next_token_probs(logits, greedy), torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
    assert sample_next(logits, greedy).tolist() == [1]


def test_sampling_draws_only_kept_tokens_and_is_seeded():
    logits = probs_logits(0.3, 0.3, 0.2, 0.1, 0.1).repeat(2000, 1)
    cfg = SamplingConfig(temperature=1.0, top_k=0, top_p=0.6)   # keeps the two 0.3s
    a = sample_next(logits, cfg, torch.Generator().manual_seed(0))
    b = sample_next(logits, cfg, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert set(a.tolist()) == {0, 1}
    assert abs((a == 0).float().mean().item() - 0.5) < 0.05
    one_hot = torch.zeros(3, 6, dtype=torch.float64)
    one_hot[0, 5] = one_hot[1, 0] = one_hot[2, 2] = 1.0
    assert draw(one_hot, torch.Generator().manual_seed(0)).tolist() == [5, 0, 2]


@pytest.mark.parametrize("bad", [dict(temperature=-0.1), dict(temperature=math.nan), dict(top_k=-1),
                                 dict(top_p=0.0), dict(top_p=1.01), dict(rep_penalty=0.0),
                                 dict(rep_penalty=-1.0), dict(top_k=2.5)])
def test_sampling_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="invalid sampling config"):
        SamplingConfig(**bad)


# ----------------------------------------------------------------------------- decoding loop

class StubModel(nn.Module):
    """Fixed logits V-1, ..., 1, 0 (token 0 most likely) and a fake cache that enforces the context
    like INFINITO's learned positions do. Records every forward's (cache length, new tokens)."""

    def __init__(self, vocab=8, context=8):
        super().__init__()
        self.cfg = SimpleNamespace(vocab_size=vocab, context=context)
        self.dummy = nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, idx, cache=None, use_cache=False):
        B, T = idx.shape
        past = cache[0].size(1) if cache else 0
        if past + T > self.cfg.context:
            raise ValueError("exceeds the context window")
        self.calls.append((past, T))
        logits = torch.arange(self.cfg.vocab_size - 1, -1, -1, dtype=torch.float).expand(B, T, -1)
        return SimpleNamespace(logits=logits, cache=[torch.zeros(B, past + T)] if use_cache else None)


def test_generate_penalises_prompt_tokens_and_repeats():
    model = StubModel()
    greedy = SamplingConfig(temperature=0, rep_penalty=1.0)
    assert generate(model, [0], 4, greedy).tokens.tolist() == [[0, 0, 0, 0]]
    # logits 7, 6, 5, ...: the prompt's token 0 drops to 7/4, so 1 wins; then 1 drops to 6/4, and so on
    out = generate(model, [0], 4, SamplingConfig(temperature=0, rep_penalty=4.0)).tokens
    assert out.tolist() == [[1, 2, 3, 4]]


def test_window_policy_and_cache_reuse():
    model = StubModel(context=8)
    keep = default_keep(8)
    assert keep == 4
    out = generate(model, list(range(3)), 12, SamplingConfig(temperature=0), use_cache=True)
    # prime on 3 tokens, then one token per call until the window is full, then re-prime on `keep` tokens
    assert model.calls[0] == (0, 3)
    assert all(t == 1 or (past == 0 and t == keep) for past, t in model.calls[1:])
    assert out.window_jumps == sum(1 for past, t in model.calls[1:] if past == 0) > 0
    cached_work = sum(t for _, t in model.calls)
    assert out.window_jumps == 2 and cached_work == 3 + (12 - 1 - out.window_jumps) + out.window_jumps * keep
    model.calls.clear()
    ref = generate(model, list(range(3)), 12, SamplingConfig(temperature=0), use_cache=False)
    assert all(past == 0 for past, _ in model.calls) and max(t for _, t in model.calls) == 8
    assert ref.window_jumps == out.window_jumps and sum(t for _, t in model.calls) > 3 * cached_work
    # a prompt longer than the context keeps its last `context` tokens
    model.calls.clear()
    long = generate(model, list(range(8)) * 2, 2, SamplingConfig(temperature=0))
    assert long.prompt_cropped == 8 and model.calls[0] == (0, 8)


def tiny_model(seed=0, context=32, spread=40.0):
    torch.manual_seed(seed)
    model = Infinito(InfinitoConfig(vocab_size=97, context=context, d_model=32, n_layers=2, n_heads=2,
                                    dropout=0.0, memory_slots=4))
    with torch.no_grad():  # spread the logits so that greedy choices are far from ties
        model.tok_emb.weight.mul_(spread)
    return model


def test_generate_is_seeded_restores_mode_and_leaves_weights_alone():
    model = tiny_model(spread=1.0)  # near-uniform logits: different seeds give different text
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = SamplingConfig()
    a = generate(model, [1, 2, 3], 30, cfg, torch.Generator().manual_seed(5)).tokens
    b = generate(model, [1, 2, 3], 30, cfg, torch.Generator().manual_seed(5)).tokens
    c = generate(model, [1, 2, 3], 30, cfg, torch.Generator().manual_seed(6)).tokens
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    streamed = []
    generate(model, [1, 2, 3], 10, cfg, torch.Generator().manual_seed(5), stream_callback=lambda t: streamed.append(t))
    assert torch.cat(streamed).tolist() == a[0, :10].tolist()
    with pytest.raises(ValueError, match="empty"):
        generate(model, [], 5)


# ----------------------------------------------------------------------------- the command line

def test_cli_prints_text_continuing_the_prompt_and_is_reproducible(base_dir, capsys):
    ck = base_dir / "base.pt"
    assert run_cli("--ckpt", ck, "--prompt", "The river", "--max-new-tokens", 20, "--seed", 3) == 0
    first, err = capsys.readouterr()
    assert first.startswith("The river") and len(first.strip()) > len("The river")
    assert re.fullmatch(r"\[20 tokens in [0-9.]+ s: [0-9,]+ tokens/s on cpu\]\n", err)  # speed: stderr, not the text
    assert run_cli("--ckpt", ck, "--prompt", "The river", "--max-new-tokens", 20, "--seed", 3) == 0
    assert capsys.readouterr().out == first
    assert run_cli("--ckpt", ck, "--prompt", "The river", "--max-new-tokens", 20, "--seed", 3, "--stream") == 0
    assert capsys.readouterr().out == first


def test_cli_json_samples_use_consecutive_seeds(base_dir, capsys):
    ck = base_dir / "base.pt"
    assert run_cli("--ckpt", ck, "--prompt", "The", "--max-new-tokens", 12, "--seed", 10, "--num-samples", 3,
                   "--json", "--top-k", 0, "--top-p", 1.0, "--temperature", 1.5) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seed"] for r in rows] == [10, 11, 12] and all(r["type"] == "sample" for r in rows)
    assert all(len(r["new_tokens"]) == 12 and r["text"] == "The" + r["completion"] for r in rows)
    assert rows[0]["sampling"] == {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "rep_penalty": 1.0}
    assert all(r["tokens_per_sec"] > 0 for r in rows)
    assert run_cli("--ckpt", ck, "--prompt", "The", "--max-new-tokens", 12, "--seed", 11, "--json",
                   "--top-k", 0, "--top-p", 1.0, "--temperature", 1.5) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["new_tokens"] == rows[1]["new_tokens"]


def test_agent_adapts_a_copy_of_the_model(base_dir, rl_dir, base_model):
    base, _ = base_model
    digest = file_digest(base_dir / "base.pt")
    policy, base_path = adapt.load_agent(str(rl_dir / "64.pt"), None)
    assert file_digest(base_path) == digest
    adapted, trace = adapt.adapt_with_agent(policy, str(rl_dir / "64.pt"), base_path, 5, 0, torch.device("cpu"))
    assert adapted is not base and not adapted.training
    assert trace.episode.length == 5
    # the agent's clock runs at its training rate: after decision k of its 6-decision episodes
    # time_left is 1 - k/6 (an episode of --agent-steps 5 would show 1 - k/5)
    assert [info["time_left"] for info in trace.episode.infos] == pytest.approx([1 - k / 6 for k in range(1, 6)])
    changed = [k for k, v in base.state_dict().items() if not torch.equal(v, adapted.state_dict()[k])]
    assert any(k.startswith("blocks.") for k in changed)  # real optimiser steps happened
    x = torch.arange(1, 17).unsqueeze(0)
    with torch.no_grad():
        assert not torch.allclose(base(x).logits, adapted(x).logits)
    assert file_digest(base_dir / "base.pt") == digest  # the base file is untouched
    s = trace.summary()
    assert sum(s["actions"].values()) == 5 and s["phi"]["min"] <= s["phi"]["mean"] <= s["phi"]["max"]
    assert 0 <= s["phi_in_band_pct"] <= 100 and s["ppl_final"] == trace.series("ppl")[-1]


def test_cli_agent_compare_prints_statistics_and_both_texts(base_dir, rl_dir, capsys):
    common = ("--prompt", "The", "--max-new-tokens", 15, "--temperature", 0)
    assert run_cli("--ckpt", base_dir / "base.pt", "--agent", rl_dir / "64.pt", "--agent-steps", 4, "--compare",
                   *common) == 0
    out = capsys.readouterr().out
    for piece in ("actions", "Φ", "mean", "std", "range", "reward's band [3, 6]", "C ", "perplexity", "reward",
                  "seed 1337, adapted model ---\nThe", "seed 1337, base model (unadapted) ---\nThe"):
        assert piece in out, piece
    assert out.index("adapted model ---") < out.index("base model (unadapted) ---")
    # --json: the adaptation, then per seed the adapted and the base sample; --ckpt defaults to the agent's base
    assert run_cli("--agent", rl_dir / "64.pt", "--agent-steps", 4, "--compare", "--json", *common) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["type"] for r in rows] == ["adaptation", "sample", "sample"]
    assert [r["model"] for r in rows[1:]] == ["adapted", "base"] and rows[1]["seed"] == rows[2]["seed"] == 1337
    assert rows[0]["steps"] == 4 and set(rows[0]["actions"]) == {"TEXT", "PHI", "MIXED"}
    assert rows[0]["base"] == str(base_dir / "base.pt")
    assert run_cli("--ckpt", base_dir / "base.pt", "--json", *common) == 0
    plain = json.loads(capsys.readouterr().out)
    assert plain["new_tokens"] == rows[2]["new_tokens"]  # --compare's base text is the plain model's


def test_stream_printer_holds_back_unfinished_characters(base_model):
    import io
    _, tok = base_model
    prompt = tok.encode("Price: ")
    text_ids = tok.encode("3 € and 東京")  # rare characters: byte-fallback pieces, several per character
    assert sum(tok.id_to_piece(i).startswith("<0x") for i in text_ids) >= 9  # € and 東京 arrive byte by byte
    out = io.StringIO()
    printer = sampling.StreamPrinter(tok, prompt, out)
    seen = []
    for i in text_ids:
        printer(torch.tensor([i]))
        seen.append(out.getvalue())
    printer.finish()
    assert out.getvalue() == "3 € and 東京\n"
    assert not any("\ufffd" in chunk for chunk in seen)   # never printed half a character


def expect_error(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def test_bad_input(base_dir, rl_dir, tmp_path, capsys):
    ck = base_dir / "base.pt"
    for flags, needle in [(("--top-p", 0), "top-p"), (("--top-p", 1.5), "top-p"), (("--top-k", -1), "top-k"),
                          (("--rep-penalty", 0), "repetition penalty"), (("--rep-penalty", -2), "repetition"),
                          (("--temperature", -1), "temperature"), (("--prompt", ""), "--prompt"),
                          (("--max-new-tokens", 0), "--max-new-tokens"), (("--num-samples", 0), "--num-samples"),
                          (("--top-k", "abc"), "--top-k"), (("--compare",), "--agent"),
                          (("--stream", "--json"), "--stream")]:
        expect_error(capsys, run_cli("--ckpt", ck, *flags), needle)
    expect_error(capsys, run_cli("--ckpt", tmp_path / "nope.pt"), "does not exist")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    expect_error(capsys, run_cli("--ckpt", bad), "not a readable checkpoint")
    expect_error(capsys, run_cli("--ckpt", rl_dir / "64.pt"), "--agent", "base checkpoint")
    expect_error(capsys, run_cli("--ckpt", ck, "--agent", ck), "'infinito-base'")
    expect_error(capsys, run_cli("--ckpt", ck, "--agent", bad), "corrupt")
    if not torch.cuda.is_available():
        expect_error(capsys, run_cli("--ckpt", ck, "--device", "cuda"), "CUDA is not available")
    # more decisions than the agent's episodes have: its clock would run past the end it knows
    expect_error(capsys, run_cli("--agent", rl_dir / "64.pt", "--agent-steps", 7), "--agent-steps 7", "at most 6")
    # another base checkpoint than the agent's (the base stage's earlier snapshot)
    expect_error(capsys, run_cli("--ckpt", base_dir / "base-step20.pt", "--agent", rl_dir / "64.pt"), "not the base checkpoint")
