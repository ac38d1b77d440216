"""The application: the stages `train.py` and `generate.py` dispatch to.

    base.py      the base stage: train INFINITO on a corpus (base.pt, snapshot, logs)
    rl.py        the RL stage: PPO schedules INFINITO's training (<step>.pt, best.pt, report)
    rl_config.py what an RL run is: presets, flags and a resumed checkpoint resolved into one plan
    presets.py   the RL stage's named setups (environment, PPOConfig, run settings)
    controls.py  the control policies, constant and adaptive, scored once per base and environment
    dashboards.py the TensorBoard tags and layout of both stages
    outputs.py   what each stage writes into its folder, locks, --overwrite, next steps
    identity.py  which base model an agent belongs to (by content)
    scoring.py   scoring policies on seeded episodes and writing the over-fitting report
    report.py    the report stage: re-score a directory of RL checkpoints
    adapt.py     `generate.py --agent`: the trained scheduler adapts a copy of the model
    sampling.py  `generate.py`: loading the model, sampling and printing text
    startup.py   Ctrl-C and SIGTERM while the scripts load torch: one line, exit 130
    cli.py       what both scripts share: one-line user errors, exit codes, device, Ctrl-C

The only layer that imports everything (data, infinito, env, ppo, common).
"""
