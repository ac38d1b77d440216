"""The scheduler on real text: a study at the tiny preset on a base trained on WikiText-2 from
../shared/data (skipped where it is absent), its environment measured on text it never trains on;
the probe that chooses a corpus's environment (bench/real_text_env.py)."""
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WT2 = ROOT.parent / "shared" / "data" / "wikitext-2"
needs_wt2 = pytest.mark.skipif(not (WT2 / "test.txt").is_file(), reason="../shared/data/wikitext-2 not present")


def contains(ids: np.ndarray, window: np.ndarray) -> bool:
    views = np.lib.stride_tricks.sliding_window_view(ids, len(window))
    return bool((views == window).all(axis=1).any())


@needs_wt2
def test_a_tiny_study_on_a_wikitext2_base_measures_on_the_test_split(tmp_path, one_torch_thread):
    import sys
    sys.path.insert(0, str(ROOT))
    from bench import rl_study
    from data import Tokenizer, encode_cached
    from env import load_base
    from infinito.checkpoint import BASE_KIND, load_checkpoint, tensor_to_bytes
    from stages.rl.presets import RL_PRESETS, preset_env
    assert rl_study.main(["--seeds", "1", "--preset", "tiny", "--corpus", "wt2", "--out", str(tmp_path)]) == 0
    study = json.loads((tmp_path / "study.json").read_text())
    assert study["corpus"] == "wt2" and "tiny preset on wt2" in (tmp_path / "study.md").read_text()
    assert json.loads((tmp_path / "seed-1" / "report.json").read_text())["heldout"]["n_episodes"] == 2
    # the environment's fixed measurement batch is WikiText-2's test split, never its valid split (the
    # base's and the episodes' training text)
    snapshot = tmp_path / "base" / RL_PRESETS["tiny"]["run"].base_file
    env_cfg = preset_env("tiny", snapshot)
    x = load_base(snapshot, env_cfg).heldout[0].numpy().astype(np.int64)
    tok = Tokenizer.from_bytes(tensor_to_bytes(load_checkpoint(snapshot, kind=BASE_KIND)["tokenizer"]))
    test, valid = (encode_cached((WT2 / f"{s}.txt").read_text(), tok, tmp_path / "ids", s).astype(np.int64)
                   for s in ("test", "valid"))
    assert all(contains(test, row) and not contains(valid, row) for row in x)


def test_real_text_env_probes_each_mode_from_a_trained_snapshot(capsys):
    import sys
    sys.path.insert(0, str(ROOT))
    from bench import real_text_env
    assert real_text_env.main(["--corpus", "builtin", "--steps", "5", "--lrs", "6e-4", "--seeds", "1",
                               "--workers", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 5 |")]
    assert len(rows) == 1
    cells = rows[0].strip("| ").split(" | ")[3:]  # TEXT, PHI, MIXED: one episode each
    assert len(cells) == 3
    for cell in cells:  # a finished episode has its numbers; a diverged one (a NaN loss) is counted, not shown
        assert cell.endswith("0/1") and "%" in cell or cell == "—, —, 1/1", cell
    assert cells[0].startswith("-")  # from a 5-step snapshot, TEXT training lowers perplexity
