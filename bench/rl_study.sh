#!/bin/bash
# The demo-scale study of README "The study at demo scale": base model and its snapshot, RL with periodic
# evaluation, then continuing from the recommended checkpoint for five more evaluations.
#   bash bench/rl_study.sh [OUT]        (default OUT=ckpt-study; about 55 minutes on 2 idle CPU cores)
set -euo pipefail
OUT=${1:-ckpt-study}
T0=$(date +%s)
python train.py --stage base --out "$OUT" --quiet
T1=$(date +%s)
python train.py --stage rl --out "$OUT" --quiet
T2=$(date +%s)
BEST=$(python -c "import json, sys; print(json.load(open(sys.argv[1]))['recommended']['step'])" "$OUT/report.json")
cp "$OUT/report.md" "$OUT/report-first-run.md"
python train.py --stage rl --resume "$OUT/$BEST.pt" --timesteps 5120 --quiet
T3=$(date +%s)
echo "wall seconds: base $((T1 - T0)), rl $((T2 - T1)), continuation $((T3 - T2)), total $((T3 - T0)); continued from step $BEST"
