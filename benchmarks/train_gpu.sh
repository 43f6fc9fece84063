#!/usr/bin/env bash
# The GPU recipe of the built-in prior, in one call: train its architecture (the NDR-Restore lite backbone, the
# winner of benchmarks/prior_arch.py) from scratch on cbsd432 + cbsd68 minus the 10 CBSD68 validation images, and
# write the exported weights to OUT/builtin.safetensors + OUT/builtin.json.
#
#   benchmarks/train_gpu.sh OUT [DATA_ROOT] [more zsir train-prior arguments, which override the ones below]
#
# Sized (by arithmetic, not yet run on a GPU) for about 10 minutes on one modern GPU: 40 000 steps of 64 patches
# of 128x128, bf16 autocast, channels_last, 12 DataLoader workers into pinned memory. --minutes 10 is a
# wall-clock guard that checkpoints and exports even if the GPU is slower (then --resume finishes the schedule).
# CPU smoke test of the same code path:
#   benchmarks/train_gpu.sh /tmp/gpu-smoke ../shared/data --device cpu --batch 4 --patch 64 --steps 40 --workers 2
# PYTHON=path/to/python picks the interpreter. To ship the result, compare it with the shipped weights on the
# validation set (python benchmarks/prior_arch.py --eval builtin OUT/builtin) and on Kodak24
# (benchmarks/denoise.py --methods builtin shipped:OUT/builtin), and copy OUT/builtin.* to zsir/weights/ if it wins.
set -euo pipefail
OUT=${1:?usage: benchmarks/train_gpu.sh OUT [DATA_ROOT] [zsir train-prior arguments]}
DATA=${2:-$(dirname "$0")/../../shared/data}
shift $(($# >= 2 ? 2 : 1))
"${PYTHON:-python}" -m zsir.models.train --run "$OUT/run" --arch ndr --config lite-plain \
    --device cuda --amp bf16 --channels-last --workers 12 \
    --batch 64 --patch 128 --steps 40000 --warmup 500 --lr 1e-3 --lr-min 1e-5 --minutes 10 --ckpt-minutes 2 \
    --data "$DATA/cbsd432" "$DATA/cbsd68" --export "$OUT/builtin" --no-progress "$@"
