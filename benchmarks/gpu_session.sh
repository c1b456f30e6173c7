#!/usr/bin/env bash
# One prepared GPU session (issue 10): run from the repository root on a machine with an NVIDIA GPU and a CUDA
# build of torch, with ../shared/data beside the repository. Prints, within its steps' time limits (9 minutes):
#   1. the CUDA tests (CUDA flow against torch-cpu's, NVOF where installed, trajectory stacks on CUDA);
#   2. pairs/s of the torch TV-L1 at 340x256 and 1024x436 by batch size, and the EPE table (benchmarks/gpu.py);
#   3. the same throughput with the solver as it was before issue 10 (commit 3dd0af4), when git history is here.
# Each step has its own time limit, so one that hangs still leaves the others' output.
set -uo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true

echo "== 1. CUDA tests"
timeout 120 python -m pytest -q -m gpu tests/test_torch_tvl1.py tests/test_nvof.py tests/test_stacking.py -p no:cacheprovider

echo "== 2. torch TV-L1 on CUDA, this checkout"
timeout 240 python benchmarks/gpu.py --device cuda --batch-sizes 1,8,32,64,128,256 --repeats 2 --epe small

echo "== 3. the solver before issue 10 (commit 3dd0af4), same benchmark"
if git cat-file -e 3dd0af4 2>/dev/null; then
    before=$(mktemp -d)
    git archive 3dd0af4 | tar -x -C "$before"
    cp benchmarks/gpu.py "$before/benchmarks/gpu.py"  # the same measurement; only the solver differs
    ln -s "$(cd .. && pwd)/shared" "$(dirname "$before")/shared" 2>/dev/null || true
    (cd "$before" && timeout 180 python benchmarks/gpu.py --device cuda --batch-sizes 8,64,256 --repeats 1 --epe none)
else
    echo "no git history here: only this checkout was measured"
fi
