#!/usr/bin/env bash
# The GPU checks of the speed issue as one prepared script for a lent GPU machine: the CUDA
# tests, bench/speed.py's CUDA rows (one slice and a batch of 8) and a 30-slice series through
# pogmdm-recon end to end (targets: `fast` < 0.2 s and `balanced` < 1 s per slice, the series
# < 30 s). Not a test. Run from the repository root with a CUDA build of torch installed:
#
#     bash bench/gpu_check.sh OUT_DIR            # OUT_DIR: where the logs go (default gpu_check)
#
# A dry run on a CPU (small): DEVICE=cpu PRESETS=fast SPEED_SLICES=berkeley BATCHES=1 \
#     SERIES_SLICES=2 bash bench/gpu_check.sh /tmp/x
#
# BART is not needed (no peer rows: the GPU targets are absolute times). Each step's output is
# in OUT_DIR; a failing step is reported and the next one still runs.
set -uo pipefail
out=${1:-gpu_check}
device=${DEVICE:-cuda}
slices=${SERIES_SLICES:-30}
presets=${PRESETS:-fast,balanced}
speed_slices=${SPEED_SLICES:-berkeley,synthetic}
batches=${BATCHES:-1,8}
mkdir -p "$out"
status=0

step() {  # step NAME COMMAND...: run, keep its output, note a failure
    local name=$1
    shift
    echo "== $name"
    if ! "$@" >"$out/$name.txt" 2>&1; then
        echo "   FAILED (see $out/$name.txt)"
        status=1
    fi
    tail -n 12 "$out/$name.txt"
}

python - <<'EOF' >"$out/device.txt" 2>&1
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print(torch.cuda.get_device_name(0))
EOF
cat "$out/device.txt"

if [ "$device" = cuda ]; then
    step tests python -m pytest -q -m cuda -p no:cacheprovider tests
fi
step speed python bench/speed.py --devices "$device" --presets "$presets" --peers "" \
    --slices "$speed_slices" --threads 1 --batch "$batches" --json "$out/speed.json"
step series_raw python -c "
from gadgets.demo.synthetic import SyntheticScan, write_synthetic_raw
write_synthetic_raw('$out/series.h5', SyntheticScan(matrix=192, slices=$slices, acceleration=3))
"
for batch in 8 1; do
    step "series_batch$batch" /usr/bin/time -f "wall %e s, peak RSS %M KB" pogmdm-recon "$out/series.h5" \
        -o "$out/series_batch$batch.h5" --set device="$device" --set batch_slices="$batch" --set parallel_slices=1
done
exit $status
