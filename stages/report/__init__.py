"""The over-fitting report: what the RL stage writes at every evaluation and `train.py --stage report`
rewrites from a folder of checkpoints.

    stage.py       the report stage: re-score a directory of RL checkpoints
    scoring.py     policies scored on seeded episodes; the report written
    controls.py    the control policies, constant and adaptive, scored once per base and environment
    overfit.py     the report's rows, statuses, recommendation and held-out verdicts
    chart.py       the report's SVG chart
    dashboards.py  the TensorBoard tags and layout of both stages
"""
