#!/usr/bin/env bash
# The course's scale on one CUDA GPU, in one command, within 12 minutes on an H100:
#
#   benchmarks/gpu.sh               # needs one CUDA GPU; without one, says so and runs nothing
#   benchmarks/gpu.sh --cpu-smoke   # every step, on a tiny file and the CPU: checks the script
#
# 1. builds the 4.9M-row course-shaped file of benchmarks/scale.py (1,600 categories, 1% broken
#    rows), in as many processes as there are cores;
# 2. runs ingest, prepare, featurize and the fastText vectors on it (every core, one epoch);
# 3. trains one epoch of the MLP, the CNN and the RNN on the GPU, under bf16 autocast, with the
#    README's GPU settings (train.device=cuda, train.precision=bf16, 4,096 titles a step at a
#    learning rate of 0.02, 4 loader processes), every core for what runs on the CPU;
# 4. times `meli predict --device cuda` over the test split's titles, for each of the three;
# 5. times `meli serve --device cuda` under load, for the CNN and the RNN;
# then prints one table of every step (time, titles/s, peak memory of the process, the models'
# validation balanced accuracy). Every step runs under `timeout` with its own limit, cut to what
# is left of the whole run's (TOTAL_SECONDS, 720 by default): a step over its limit is stopped,
# the steps that need it are skipped, and the table shows what was measured. The exit status is
# 0 when every step ran, 1 otherwise.
#
# Run it from the repository's environment (the README's set-up). Environment: PYTHON (default:
# python), WORK (default: /tmp/meli-gpu; the file is kept there and reused by a rerun),
# TOTAL_SECONDS.
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
TOTAL_SECONDS=${TOTAL_SECONDS:-720}
mode=gpu
case "${1:-}" in
  "") ;;
  --cpu-smoke) mode=cpu-smoke ;;
  -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: benchmarks/gpu.sh [--cpu-smoke]" >&2; exit 2 ;;
esac

if [ "$mode" = gpu ]; then
  # Asked of PyTorch, which will run the models: a driver that nvidia-smi sees but PyTorch
  # cannot use is no GPU for this.
  if ! gpus=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null) \
      || [ "$gpus" -lt 1 ]; then
    echo "benchmarks/gpu.sh: no CUDA GPU present (PyTorch sees none): nothing run." \
         "'benchmarks/gpu.sh --cpu-smoke' runs every step on a tiny file on this CPU." >&2
    exit 0
  fi
  WORK=${WORK:-/tmp/meli-gpu}
  rows=4900000; categories=1600; device=cuda; titles=1000000; serve_seconds=15
  # Step limits (seconds), sized from the 2-core CPU figures of the README's "The full data"
  # table and what a GPU changes; their sum is over TOTAL_SECONDS, which caps the whole.
  build_limit=150; data_limit=120; embeddings_limit=120; train_limit=300; predict_limit=90
  serve_limit=90
  # The README's settings for a GPU ("Training at scale"); train.threads: the CPU's share of
  # the work (the bf16 check after training runs there).
  settings=(--set embeddings.epochs=1 --set train.device=cuda --set train.precision=bf16
            --set train.batch_size=4096 --set train.learning_rate=0.02
            --set train.loader_workers=4 --set "train.threads=$(nproc)")
else
  WORK=${WORK:-/tmp/meli-gpu-smoke}
  rows=6000; categories=20; device=cpu; titles=2000; serve_seconds=2
  build_limit=60; data_limit=60; embeddings_limit=60; train_limit=120; predict_limit=60
  serve_limit=60
  # The same steps and settings, the models and vectors made small.
  settings=(--set embeddings.epochs=1 --set embeddings.dim=16 --set embeddings.buckets=10000
            --set train.device=cpu --set train.precision=auto --set train.batch_size=4096
            --set train.learning_rate=0.02 --set train.loader_workers=1 --set train.threads=1
            --set "mlp.hidden_sizes=[64]" --set cnn.filters=32 --set rnn.hidden_size=32)
fi
workspace="$WORK/course-$rows$([ "$categories" = 1600 ] || echo "-c$categories")"
scale=("$PYTHON" benchmarks/scale.py --rows "$rows" --categories "$categories" --format jsonl
       --work "$WORK")
started=$(date +%s)
failed=0

# step NAME LIMIT COMMAND...: COMMAND under `timeout`, at most LIMIT seconds and at most what is
# left of TOTAL_SECONDS; status 0 if it finished in time and succeeded.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((TOTAL_SECONDS - ($(date +%s) - started)))
  if [ "$left" -lt 5 ]; then
    echo "== $name: not run, the run's ${TOTAL_SECONDS} s are spent" >&2
    failed=1
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (at most ${limit} s)" >&2
  local code=0
  timeout --kill-after=15 "$limit" "$@" || code=$?
  if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
    echo "== $name: stopped at its limit of ${limit} s" >&2
  elif [ "$code" -ne 0 ]; then
    echo "== $name: failed (exit $code)" >&2
  fi
  [ "$code" -eq 0 ] || failed=1
  return "$code"
}

rm -rf "$workspace/timings" "$workspace"/scale-*.json
if step "build the ${rows}-row file" "$build_limit" "${scale[@]}" --build-only \
   && step "ingest, prepare, featurize" "$data_limit" "${scale[@]}" "${settings[@]}" \
        --stages ingest,prepare,featurize --json "$workspace/scale-1-data.json" \
   && step "embeddings" "$embeddings_limit" "${scale[@]}" "${settings[@]}" \
        --stages embeddings --json "$workspace/scale-2-embeddings.json"; then
  for model in mlp cnn rnn; do
    if step "train@$model, one epoch" "$train_limit" "${scale[@]}" "${settings[@]}" \
         --stages "train@$model" --json "$workspace/scale-3-train-$model.json"; then
      step "meli predict, $model" "$predict_limit" "$PYTHON" benchmarks/gpu_timing.py predict \
        --workspace "$workspace" --model "$model" --device "$device" --titles "$titles"
      if [ "$model" != mlp ]; then
        step "meli serve, $model" "$serve_limit" "$PYTHON" benchmarks/gpu_timing.py serve \
          --workspace "$workspace" --model "$model" --device "$device" \
          --seconds "$serve_seconds"
      fi
    fi
  done
fi

echo
echo "benchmarks/gpu.sh ($mode, $(date +%Y-%m-%d), $((($(date +%s) - started))) s in all):"
if [ "$mode" = gpu ]; then
  "$PYTHON" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB; PyTorch {torch.__version__}, CUDA {torch.version.cuda}")'
fi
[ -d "$workspace" ] && "$PYTHON" benchmarks/gpu_timing.py table --workspace "$workspace"
exit "$failed"
