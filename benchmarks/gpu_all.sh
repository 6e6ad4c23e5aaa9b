#!/usr/bin/env bash
# Every GPU-side measurement of issue 17 in one go, about 7 minutes on one H200: the weight
# swap phase table, colocated throughput at two batch sizes, and the README's GPU quickstart
# (`rollstream up` on a random-init Qwen2.5-0.5B-shaped model). JSON and logs go to $OUT
# (default benchmarks/results/gpu); each step has its own time limit and a failure does not
# stop the next one (its log says why). Run from the repository root:
#     OUT=/some/dir bash benchmarks/gpu_all.sh
# SMOKE=1 runs the same steps at toy sizes on a CPU in about 2 minutes (a check of the script).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu}
PY=${PYTHON:-python}
mkdir -p "$OUT"
rm -f "$OUT/steps.jsonl"
SIZE=0.5b WS=(--repeats 3) TP=() T1=75 T2=45 UPMIN=1.5
if [ -n "${SMOKE:-}" ]; then
  SIZE=tiny WS=(--size tiny --device cpu --repeats 1) TP=(--tiny) T1=5 T2=5 UPMIN=0.3
fi
step() {  # step NAME LIMIT_S CMD...: run, log to $OUT/NAME.log, record rc and seconds
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name: $*"
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >>"$OUT/steps.jsonl"
  tail -n 16 "$OUT/$name.log"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.csv" 2>&1
# 1. publish -> first rollout on the new version, phase by phase (494M params, /dev/shm)
step weight_swap 150 $PY benchmarks/weight_swap.py "${WS[@]}" --out "$OUT/weight_swap.json"
# 2. colocated generate -> train -> publish -> load: 32 prompts x 8 (the last round's shape) ...
step throughput_b32 150 $PY benchmarks/gpu_throughput.py "${TP[@]}" --seconds $T1 \
  --out "$OUT/gpu_throughput_b32.json"
# ... and 4x the batch (128 prompts x 8 = 1,024 rows): does a bigger batch fill the GPU?
step throughput_b128 120 $PY benchmarks/gpu_throughput.py "${TP[@]}" --seconds $T2 --prompts 128 \
  --out "$OUT/gpu_throughput_b128.json"
# 3. the README's GPU quickstart on a random-init 0.5B Qwen2 (no hub here): devices in the logs
step make_model 60 $PY scripts/make_hf_model.py --size $SIZE --out /tmp/rollstream-qwen2-$SIZE
rm -rf "runs/gpu-qwen2-$SIZE"
step up_gsm8k 150 rollstream up --no-view --name gpu-qwen2-$SIZE --config examples/gsm8k.yaml \
  --set model.path=/tmp/rollstream-qwen2-$SIZE --set generator.batch_prompts=64 \
  --set target.minutes=$UPMIN
run=runs/gpu-qwen2-$SIZE
if [ -d "$run" ]; then
  mkdir -p "$OUT/up"
  cp "$run"/*.jsonl "$run"/config.yaml "$OUT/up/" 2>/dev/null
  for f in "$run"/logs/*.log; do tail -n 200 "$f" >"$OUT/up/$(basename "$f")"; done
fi
echo "== done: $OUT"; cat "$OUT/steps.jsonl"
