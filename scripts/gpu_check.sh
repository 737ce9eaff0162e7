#!/usr/bin/env bash
# The GPU checks of issue 17 (point 7), for a session that has a CUDA device; about 5 minutes.
#   scripts/gpu_check.sh            # results in ./gpu_check/ (or in $OUT when it is set)
# 1. the CUDA tests (skipped on the CPU) and the bf16/compile tests, 2. one tradeoff-train run
# on CUDA with bf16 autocast and a compiled training step, its MLflow run read back, 3.
# tradeoff-bench on CUDA, in float32 and with bf16 autocast (step time, ratio to plain, peak
# memory): the figures for docs/bench.md.
set -euo pipefail
out="${OUT:-gpu_check}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
python - <<'PY' | tee "$out/device.txt"
import torch
assert torch.cuda.is_available(), "no CUDA device: nothing to check here"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
PY

python -m pytest tests/test_recipe.py -k "cuda or compile or bf16" -n 0 -p no:cacheprovider \
  -q -rs 2>&1 | tee "$out/tests.txt"

work="$(mktemp -d)"
(cd "$work" && tradeoff-train data=digits train.device=cuda train.amp=bf16 train.compile=true \
  train.epochs=5 tracking.log_model=false) > "$out/train.txt" 2>&1 || { tail -n 40 "$out/train.txt"; exit 1; }
tail -n 3 "$out/train.txt"
(cd "$work" && python - <<'PY') | tee "$out/train_run.txt"
import mlflow
mlflow.set_tracking_uri("sqlite:///mlflow.db")
run = mlflow.search_runs(search_all_experiments=True).iloc[0]
assert run["status"] == "FINISHED", run["status"]
for key in ("test/accuracy", "test/mean_certificate", "train/seconds", "train/images_per_second",
            "train/peak_memory_mb"):
    print(f"{key}: {run['metrics.' + key]:.4g}")
PY

tradeoff-bench --device cuda --json "$out/bench_cuda.json" 2>&1 | tee "$out/bench_cuda.txt"
tradeoff-bench --device cuda --bf16 --json "$out/bench_cuda_bf16.json" 2>&1 \
  | tee "$out/bench_cuda_bf16.txt"
echo "results in $out"
