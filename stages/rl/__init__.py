"""The RL stage: PPO schedules INFINITO's training (`train.py --stage rl`).

    stage.py    the stage: builds the environments and the agent, trains, evaluates, keeps best.pt
    plan.py     what an RL run is: a preset or a resumed checkpoint and the flags, checked into one plan
    presets.py  the named setups and `resolve`, where they and the flags become typed settings
    record.py   what an RL checkpoint records about its run (RunRecord)
    teacher.py  --teacher: the policy starts as a clone of a control
"""
