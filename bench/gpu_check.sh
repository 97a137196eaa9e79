#!/usr/bin/env bash
# The checks of issue 14 that need a GPU, in one run (device time is short: ~6 minutes on an H200).
#   bash bench/gpu_check.sh            # writes $OUT/lp_batch_h200.txt, $OUT/gpu_tests.txt
# 1. a batch's LPs together vs one at a time at d = 602,112, B = 1, 8, 32 (per-image time, host
#    syncs, same optima); 2. the LP's share of an MLA-LP iteration on a random-weight ML-GCN at
#    B = 8, the LPs one by one and together; 3. the GPU tests: the batched solver on CUDA, the
#    sharded runner's NCCL path (1 rank) and two ranks sharing the GPU (gloo).
set -uo pipefail
OUT=${OUT:-bench/results}
export PYTHONUNBUFFERED=1 MLALP_DEVICE=cuda
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())"
timeout 300 python bench/lp_batch.py --device cuda --sizes 602112 --batches 1 8 32 --regimes 0 1 4 7 \
    2>&1 | tee "$OUT/lp_batch_h200.txt"
timeout 200 python bench/lp_batch.py --device cuda --mlalp-only --mlalp-batch 8 --mlalp-iterations 3 \
    2>&1 | tee -a "$OUT/lp_batch_h200.txt"
timeout 200 python -m pytest -q -rs tests/test_lp_batch.py tests/test_runner.py -k "gpu or process_group" \
    2>&1 | tee "$OUT/gpu_tests.txt"
