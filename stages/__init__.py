"""The application: the stages `train.py` and `generate.py` dispatch to, one room each.

    base.py       the base stage: train INFINITO on a corpus (base.pt, snapshot, logs)
    rl/           the RL stage: PPO schedules INFINITO's training (<step>.pt, best.pt); presets, the run's plan
    report/       the over-fitting report, its scoring, controls, chart and dashboards; the report stage
    generation/   `generate.py`: sampling text, and the trained scheduler adapting a copy of the model
    outputs.py    what each stage writes into its folder, locks, --overwrite, next steps
    identity.py   which base model an agent belongs to (by content)
    startup.py    Ctrl-C and SIGTERM while the scripts load torch: one line, exit 130
    cli.py        what the scripts share: one-line user errors, exit codes, device, Ctrl-C, stage flags

The only layer that imports everything (data, infinito, env, ppo, common).
"""
