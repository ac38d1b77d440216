"""The layers point one way (README "Development"): each package imports only the packages below it.

    common  <-  data, infinito  <-  env  <-  stages  <-  train.py, generate.py
    common  <-  ppo (a generic PPO library)   <-  stages

`ppo/` knows nothing of reports, text or INFINITO; the RL presets, the over-fitting report and its
chart are the application's (`stages/`); measuring tools that reach into the environment's
internals are `bench/`'s.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"common", "data", "infinito", "env", "ppo", "stages", "train", "generate"}
ALLOWED = {
    "common": set(),
    "data": {"common"},
    "infinito": {"common"},
    "env": {"common", "data", "infinito"},
    "ppo": {"common"},
    "stages": {"common", "data", "infinito", "env", "ppo"},
    "train": {"common", "data", "infinito", "env", "ppo", "stages"},
    "generate": {"common", "data", "infinito", "env", "ppo", "stages"},
}


def imported_packages(path: Path) -> set:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out & PROJECT


def test_every_package_imports_only_the_layers_below_it():
    wrong = []
    for layer, allowed in ALLOWED.items():
        files = [ROOT / f"{layer}.py"] if (ROOT / f"{layer}.py").is_file() else sorted((ROOT / layer).rglob("*.py"))
        assert files, layer
        for f in files:
            extra = imported_packages(f) - allowed - {layer}
            if extra:
                wrong.append(f"{f.relative_to(ROOT)} imports {', '.join(sorted(extra))}")
    assert not wrong, wrong


def test_the_checker_sees_a_wrong_import(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("import os\nfrom ppo.trainer import PPO\n")
    assert imported_packages(bad) == {"ppo"}


def test_ppo_is_a_generic_library_and_each_module_sits_where_its_folder_says():
    ppo_text = " ".join(p.read_text() for p in sorted((ROOT / "ppo").glob("*.py")))
    for word in ("Infinito", "Report(", "report_svg", "tokenizer", "perplexity", "Φ"):
        assert word not in ppo_text, word
    for moved, now in (("ppo/report.py", "stages/report/overfit.py"), ("ppo/chart.py", "stages/report/chart.py"),
                       ("env/presets.py", "stages/rl/presets.py"), ("env/dynamics.py", "bench/dynamics.py")):
        assert not (ROOT / moved).exists() and (ROOT / now).is_file(), moved


def test_no_setting_name_means_two_things():
    """A name shared by two configs must be the same setting. The allowed ones: `seed` and `device`
    (each stage's run seed and torch device), `phi_low` / `phi_high` (the Φ band: the environment
    trains its model toward the reward's band), `zero_first_step` (the same switch of every reward),
    `w_gain` (the same text-gain weight of the progress and final rewards)."""
    from collections import defaultdict
    from dataclasses import fields

    from env import EnvConfig, FinalReward, ProgressReward, RewardConfig
    from infinito.config import InfinitoConfig
    from infinito.presets import BaseTrainConfig
    from ppo import PPOConfig
    from stages.rl.presets import RUN_KEYS
    owners = defaultdict(set)
    for cls in (EnvConfig, RewardConfig, ProgressReward, FinalReward, InfinitoConfig, BaseTrainConfig, PPOConfig):
        for f in fields(cls):
            owners[f.name].add(cls.__name__)
    for key in RUN_KEYS:
        owners[key].add("run")
    shared = {name for name, where in owners.items() if len(where) > 1}
    assert shared == {"seed", "device", "phi_low", "phi_high", "zero_first_step", "w_gain"}, shared
