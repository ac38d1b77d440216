"""A fresh run never silently replaces an earlier run of the same stage in its --out."""
import shutil

import train


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_fresh_rl_run_into_an_occupied_folder_stops_and_leaves_every_file(capsys, base_dir, rl_dir, tmp_path):
    out = tmp_path / "ckpt"
    shutil.copytree(rl_dir, out)
    before = snapshot(out)
    rl = ["--stage", "rl", "--preset", "tiny", "--quiet", "--base", str(base_dir / "base.pt"), "--out", str(out)]
    assert train.main(rl) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "already holds an RL run" in err and f"--resume {out / '64.pt'}" in err and "--overwrite" in err
    assert snapshot(out) == before
    # --overwrite replaces it: the new run's files, none of the old run's left aside
    assert train.main([*rl, "--overwrite", "--timesteps", "32"]) == 0
    assert (out / "32.pt").exists() and not (out / "64.pt").exists()
    assert not list(out.glob(".earlier-run-*"))


def test_the_rl_stage_still_trains_beside_its_base_checkpoint_and_says_what_next(base_dir, tmp_path, capsys):
    out = tmp_path / "ckpt"
    shutil.copytree(base_dir, out)  # base.pt, the snapshot, tokenizer, logs: the base stage's files
    assert train.main(["--stage", "rl", "--preset", "tiny", "--quiet", "--base", str(out / "base.pt"),
                       "--out", str(out), "--timesteps", "32"]) == 0
    printed = capsys.readouterr().out
    assert f"python generate.py --agent {out / 'best.pt'}" in printed
    assert f"python train.py --stage report --ckpt-dir {out}" in printed and f"tensorboard --logdir {out / 'runs'}" in printed


def test_only_the_latest_checkpoint_is_full_and_a_light_one_evaluates_and_generates_the_same(
        rl_dir, tmp_path, capsys):
    import json

    import torch

    import generate
    from ppo.checkpoint import is_light, write_light
    ckpts = {name: torch.load(rl_dir / name, weights_only=True) for name in ("32.pt", "64.pt", "best.pt")}
    assert is_light(ckpts["32.pt"]) and is_light(ckpts["best.pt"]) and not is_light(ckpts["64.pt"])
    assert (rl_dir / "best.pt").stat().st_size < (rl_dir / "64.pt").stat().st_size / 4
    light = tmp_path / "64-light.pt"
    write_light(str(rl_dir / "64.pt"), str(light))

    def sample(agent):
        assert generate.main(["--agent", str(agent), "--agent-steps", "3", "--max-new-tokens", "8", "--json"]) == 0
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return [{k: v for k, v in row.items() if k not in ("agent", "tokens_per_sec")} for row in rows]  # all but
        # the file's name and the measured speed
    assert sample(light) == sample(rl_dir / "64.pt")  # the adaptation's decisions and the text


def test_resuming_a_light_checkpoint_says_it_does_not_repeat_the_run(base_dir, rl_dir, tmp_path, capsys):
    out = tmp_path / "ckpt"
    shutil.copytree(rl_dir, out)
    assert train.main(["--stage", "rl", "--quiet", "--resume", str(out / "32.pt"), "--timesteps", "32"]) == 0
    assert "is a light checkpoint" in capsys.readouterr().out


def test_the_user_chooses_which_checkpoints_stay_full(base_dir, tmp_path, capsys):
    import torch

    from ppo.checkpoint import is_light
    rl = ["--stage", "rl", "--preset", "tiny", "--quiet", "--base", str(base_dir / "base.pt")]
    assert train.main([*rl, "--out", str(tmp_path / "a"), "--full-checkpoints", "32"]) == 0
    assert not any(is_light(torch.load(tmp_path / "a" / f, weights_only=True)) for f in ("32.pt", "64.pt"))
    assert train.main([*rl, "--out", str(tmp_path / "b"), "--full-checkpoints", "soon"]) == 2
    assert "--full-checkpoints must be latest, all or positive steps" in capsys.readouterr().err
