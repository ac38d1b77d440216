#!/usr/bin/env bash
# The GPU path, end to end, in one script of under eight minutes. Run it from the project root
# on a machine with a GPU and the python that has torch, sentencepiece, tensorboard, tqdm, numpy
# and pytest (nothing is installed):
#
#     PYTHONPATH=. bash bench/gpu_check.sh            # results in bench/out/gpu_check/
#     DEVICE=cpu QUICK=1 PYTHONPATH=. bash bench/gpu_check.sh   # the same steps on CPU, small
#
# 1. tiny base, RL and generate.py on the device; 2. a checkpoint written on the device resumed
# on CPU and back; 3. the tests marked for CUDA; 4. paper-preset base tokens/s and RL decisions/s
# with 1 and 8 environments; 5. bf16 autocast against fp32: the loss after the same short run.
set -euo pipefail
DEVICE=${DEVICE:-cuda}
PY=${PYTHON:-python}
OUT=${OUT_DIR:-bench/out/gpu_check}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }
run() { say "\$ $*"; "$@" >> "$LOG" 2>&1 || { say "FAILED ($?): $*"; FAILED=1; }; }
FAILED=0
if [ -n "${QUICK:-}" ]; then PAPER_STEPS=6; RL_ROLLOUTS=1; PRESET=tiny; else PAPER_STEPS=40; RL_ROLLOUTS=2; PRESET=paper; fi

say "== $(date -u +%F) on $($PY -c 'import torch;print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'), torch $($PY -c 'import torch;print(torch.__version__, torch.version.cuda)')"

say "== 1. tiny base, RL and generate on $DEVICE"
run $PY train.py --stage base --preset tiny --steps 30 --device "$DEVICE" --out "$W/tiny" --quiet
run $PY train.py --stage rl --preset tiny --device "$DEVICE" --base "$W/tiny/base.pt" --out "$W/tiny-rl" --quiet
run $PY generate.py --ckpt "$W/tiny/base.pt" --device "$DEVICE" --max-new-tokens 20 --seed 1
run $PY generate.py --agent "$W/tiny-rl/best.pt" --device "$DEVICE" --max-new-tokens 20 --seed 1

say "== 2. a checkpoint written on $DEVICE, resumed on CPU, then on $DEVICE again"
run $PY train.py --stage base --resume "$W/tiny/base.pt" --steps 35 --device cpu --out "$W/tiny-cpu" --quiet
run $PY train.py --stage base --resume "$W/tiny-cpu/base.pt" --steps 40 --device "$DEVICE" --out "$W/tiny-back" --quiet
run $PY train.py --stage rl --resume "$W/tiny-rl/64.pt" --timesteps 32 --device cpu --quiet

say "== 3. tests marked for CUDA"
run $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py

say "== 4. $PRESET preset: base tokens/s, RL decisions/s with 1 and 8 environments"
run $PY train.py --stage base --preset $PRESET --steps $PAPER_STEPS --log-every 5 --eval-every 100000 \
    --device "$DEVICE" --out "$W/paper" --quiet
$PY - "$W/paper/base_log.jsonl" <<'PY' | tee -a "$LOG"
import json, sys
rates = [r["lm/time/tokens_per_sec"] for r in map(json.loads, open(sys.argv[1])) if "lm/time/tokens_per_sec" in r]
print(f"base tokens/s: {sum(rates[1:]) / max(len(rates[1:]), 1):,.0f} (windows of 5 steps after the first)")
PY
for n in 1 8; do
  run $PY train.py --stage rl --preset $PRESET --device "$DEVICE" --base "$W/paper/base.pt" --out "$W/rl$n" --quiet \
      --num-envs $n --workers $n --n-steps 8 --timesteps $((8 * n * RL_ROLLOUTS)) --eval-freq 100000000 --eval-episodes 2
  $PY - "$W/rl$n/rl_log.jsonl" "$n" <<'PY' | tee -a "$LOG"
import json, sys
fps = [r["time/fps"] for r in map(json.loads, open(sys.argv[1])) if "time/fps" in r]
print(f"RL decisions/s with {sys.argv[2]} environment(s): {fps[-1]:.2f}" if fps else "RL: no time/fps logged")
PY
done

say "== 5. bf16 autocast against fp32 (demo preset, 60 steps, same seed)"
for prec in fp32 bf16; do
  run $PY train.py --stage base --preset demo --steps 60 --eval-every 60 --precision $prec --device "$DEVICE" \
      --out "$W/$prec" --quiet
done
$PY - "$W" <<'PY' | tee -a "$LOG"
import json, sys
s = {p: json.load(open(f"{sys.argv[1]}/{p}/base_summary.json")) for p in ("fp32", "bf16")}
d = s["bf16"]["val_loss"] - s["fp32"]["val_loss"]
print(f"validation loss fp32 {s['fp32']['val_loss']:.4f}, bf16 {s['bf16']['val_loss']:.4f}, difference {d:+.4f}")
PY

say "== done: $([ $FAILED = 0 ] && echo 'every step passed' || echo 'SOME STEPS FAILED (see above)')"
exit $FAILED
