"""bench/env_dynamics.py: an episode whose inner training diverges is counted and left out, not a crash."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_diverged_episode_is_counted_and_the_others_are_the_runners(base_dir, one_torch_thread):
    sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
    import env_dynamics as ed
    from env import run_policy
    from stages.rl.presets import preset_env
    snapshot = base_dir / "base-step20.pt"
    ed._init(str(snapshot), preset_env("tiny", snapshot, inner_lr=1e3).to_dict())
    name, played, lost = ed._run(("always PHI", 5, 2))
    assert (played.seeds, played.returns, lost) == ([], [], [5, 6])
    assert "always PHI: seeds 5, 6" in ed.diverged_lines({"always PHI": lost, "always TEXT": []})[0]
    cfg = preset_env("tiny", snapshot)
    ed._init(str(snapshot), cfg.to_dict())
    _, played, lost = ed._run(("always TEXT", 5, 2))
    assert lost == [] and played.seeds == [5, 6]
    assert played.returns == run_policy(ed._ENV, ed.policies(cfg)["always TEXT"], n_episodes=2, seed=5).returns
