#!/usr/bin/env bash
# The prepared GPU run (one call on a lent machine; see docs/benchmarks.md, "On a GPU").
#
#   bash benchmarks/gpu_run.sh            # on a CUDA machine, from the repo root; logs under $OUT (default out/gpu)
#
# 1. benchmarks/gpu_check.py: every family x {eager, sdpa} on CUDA against the CPU reference (records, step
#    geometry, one-pass per-token gradients, notebook 07's descent records, notebook 05's surrogates),
#    bfloat16's distance from float32, device_map="auto".
# 2. benchmarks/descent_subset_cost.py on randomly initialised models of Qwen2.5-1.5B's and LLaMA-7B's shapes in
#    float32: notebook 07's cost per token and per subset token on the GPU.
# 3. With THROUGHPUT=1: benchmarks/throughput.py on randomly initialised models of real shapes (Qwen2.5-1.5B, LLaMA-7B), in bfloat16
#    and float32: forward, capture, analysis, naive reference, the paper-profile analysis (forward_equivalents)
#    and per-token gradients one pass per text vs one backward per token on the model under test.
# The machine starts bare and reaches nothing outside: transformers travels as a wheel in .whl/ (pip download
# transformers==5.23.0 there, the version pyproject pins); torch, numpy, scipy and accelerate are the image's.
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/card.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, \
'device', torch.cuda.get_device_name())" | tee -a "$OUT/card.txt"
timeout 200 python3 benchmarks/gpu_check.py 2>&1 | tee "$OUT/gpu_check.log"
for shape in qwen2-1.5b llama-7b; do
  echo "== descent cost $shape float32"
  timeout 120 python3 benchmarks/descent_subset_cost.py --random "$shape" --device cuda --stride 2 --texts 8 \
    2>&1 | tee "$OUT/descent_cost_${shape}.log"
done
[ "${THROUGHPUT:-0}" = 1 ] || exit 0
for shape in qwen2-1.5b llama-7b; do
  for dtype in bfloat16 float32; do
    echo "== throughput $shape $dtype"
    timeout 100 python3 benchmarks/throughput.py --random "$shape" --device cuda --dtype "$dtype" --texts 32 \
      --max-tokens 512 --batch-tokens 8192 --token-budget 65536 --modes a_forward,b_capture,c_analysis,d_naive,c_paper \
      --grad-model same --grad-texts 1 --grad-tokens 128 --grad-threads 0 --json "$OUT/throughput_${shape}_${dtype}.json" \
      2>&1 | tee "$OUT/throughput_${shape}_${dtype}.log"
  done
done
