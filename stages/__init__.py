"""The application: the stages `train.py` and `generate.py` dispatch to.

    base.py      the base stage: train INFINITO on a corpus (base.pt, snapshot, logs)
    rl.py        the RL stage: PPO schedules INFINITO's training (<step>.pt, best.pt, report)
    rl_config.py what an RL run is: presets, flags and a resumed checkpoint resolved into one plan
    scoring.py   scoring policies on seeded episodes and writing the over-fitting report
    report.py    the report stage: re-score a directory of RL checkpoints
    adapt.py     `generate.py --agent`: the trained scheduler adapts a copy of the model
    sampling.py  `generate.py`: loading the model, sampling and printing text
    cli.py       what both scripts share: one-line user errors, exit codes, device, Ctrl-C

The only layer that imports everything (data, infinito, env, ppo, common).
"""
