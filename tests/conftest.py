"""Fixtures shared by the test modules: a tiny base checkpoint, a tiny RL run over it, tiny studies (seconds each)."""
import hashlib
import os
from pathlib import Path

import pytest
import torch

import train

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one worker process per core (setup.cfg's -n 2): a torch thread each, since two threads per
    # worker would oversubscribe the cores and slow every test several times over
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Environments run one torch thread each in the RL stage; tests of them do too (and are faster for it)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory):
    """`train.py --stage base --preset tiny --steps 30 --log-every 1`: base.pt, its step-20 snapshot, tokenizer,
    token cache, logs. The one base training of the suite: read-only, copy to modify."""
    out = tmp_path_factory.mktemp("tinybase")
    old = torch.get_num_threads()  # one thread, pinned: tests that repeat this run compare numbers exactly
    assert train.main(["--stage", "base", "--preset", "tiny", "--quiet", "--out", str(out), "--steps", "30",
                       "--log-every", "1", "--threads", "1"]) == 0
    torch.set_num_threads(old)
    return out


@pytest.fixture(scope="session")
def rl_dir(base_dir, tmp_path_factory):
    """`train.py --stage rl --preset tiny` over base_dir: 32.pt, 64.pt, best.pt, report. Read-only: copy to modify."""
    out = tmp_path_factory.mktemp("tinyrl")
    assert train.main(["--stage", "rl", "--preset", "tiny", "--quiet", "--base", str(base_dir / "base.pt"),
                       "--out", str(out)]) == 0
    return out


def file_digest(path) -> str:
    """The file's SHA-256 (first 16 hex digits): whether a file's bytes changed."""
    return hashlib.sha256(open(path, "rb").read()).hexdigest()[:16]


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory):
    """study(name, *flags): `bench/rl_study.py --seeds 1 --preset tiny` in its own folder, run once per name
    (read-only: copy to modify)."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench import rl_study
    made = {}

    def study(name: str, *flags: str) -> Path:
        if name not in made:
            out = tmp_path_factory.mktemp(name)
            assert rl_study.main(["--seeds", "1", "--preset", "tiny", "--out", str(out), *flags]) == 0
            made[name] = out
        return made[name]
    return study
