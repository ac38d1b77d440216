"""The CUDA path (skipped without a GPU; bench/gpu_check.sh runs these with -m cuda)."""
import pytest
import torch

from common.files import FORMAT_VERSION, load_checkpoint, save_checkpoint
from infinito.checkpoint import build_model
from infinito.config import InfinitoConfig
from infinito.generation import generate
from infinito.model import Infinito
from infinito.presets import PRESETS
from infinito.sampling import SamplingConfig
from infinito.training import make_optimizer, train_step

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def tiny(device: str) -> Infinito:
    torch.manual_seed(0)
    return Infinito(InfinitoConfig(**{**PRESETS["tiny"]["model"], "vocab_size": 64, "context": 32})).to(device)


def test_a_training_step_on_cuda_matches_cpu():
    x = torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(1))
    stats = {}
    for device in ("cpu", "cuda"):
        model = tiny(device)
        opt = make_optimizer(model, 1e-3)
        stats[device] = [train_step(model, opt, x.to(device), x.roll(-1, 1).to(device), 1.0, 0.1)["loss"]
                         for _ in range(3)]
        assert model.memory.used.any()
    assert stats["cuda"] == pytest.approx(stats["cpu"], rel=1e-3)


def test_bf16_autocast_step_on_cuda_is_finite():
    model = tiny("cuda")
    x = torch.randint(0, 64, (2, 32), device="cuda")
    s = train_step(model, make_optimizer(model, 1e-3), x, x.roll(-1, 1), bf16=True)
    assert all(torch.isfinite(torch.tensor(v)) for v in s.values())


def test_a_checkpoint_written_on_cuda_loads_on_cpu_and_back(tmp_path):
    model = tiny("cuda")
    save_checkpoint(tmp_path / "m.pt", {"format_version": FORMAT_VERSION, "kind": "infinito-base",
                                        "model_config": model.cfg.to_dict(), "model": model.state_dict()})
    on_cpu = build_model(load_checkpoint(tmp_path / "m.pt", map_location="cpu"), "cpu")
    back = build_model(load_checkpoint(tmp_path / "m.pt", map_location="cuda"), "cuda")
    for k, v in model.state_dict().items():
        assert torch.equal(on_cpu.state_dict()[k], v.cpu()) and torch.equal(back.state_dict()[k], v), k


def test_greedy_generation_on_cuda_is_the_same_with_and_without_the_cache():
    model = tiny("cuda")
    greedy = SamplingConfig(temperature=0.0)
    a = generate(model, torch.tensor([1, 2, 3], device="cuda"), 40, greedy, use_cache=True).tokens
    b = generate(model, torch.tensor([1, 2, 3], device="cuda"), 40, greedy, use_cache=False).tokens
    assert torch.equal(a, b)
