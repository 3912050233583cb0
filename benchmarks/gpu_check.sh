#!/usr/bin/env bash
# One command for a machine with a CUDA GPU (under 5 minutes): the CUDA tests, then the benchmark at fp16 and
# fp32 (full-size network, 1080p, 1 and 6 faces), printed as one table. Run from the checkout, with FaceMagic
# installed (pip install -e ".[test]") and a CUDA build of torch:
#     bash benchmarks/gpu_check.sh [YUNET_FILE]
set -uo pipefail
cd "$(dirname "$0")/.."
python - <<'PY' || { echo "no CUDA GPU visible to torch: see 'facemagic models doctor'"; exit 1; }
import torch, sys
sys.exit(0 if torch.cuda.is_available() else 1)
PY
python - <<'PY' || exit 1
import onnxruntime, sys
if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
    print("the baseline (insightface's INSwapper) needs onnxruntime-gpu to run on the GPU, and this onnxruntime "
          "has no CUDA provider. Install it in place of the CPU build (they share one folder):\n"
          "  python -m pip uninstall -y onnxruntime onnxruntime-gpu && python -m pip install onnxruntime-gpu")
    sys.exit(1)
PY
yunet=()
[ $# -ge 1 ] && yunet=(--yunet "$1")
out=$(mktemp -d)
echo "== CUDA tests"
python -m pytest -q -rs -k "cuda or gpu" tests/ 2>&1 | tail -n 15 | tee "$out/tests.txt"
for dtype in fp16 fp32; do
  for faces in 1 6; do
    echo "== bench $dtype, $faces face(s) per frame, 1080p, 64 frames"
    facemagic bench --device cuda --dtype "$dtype" --faces "$faces" --frames 64 --height 1080 "${yunet[@]}" \
      > "$out/bench_${dtype}_${faces}.txt" 2>&1 || { tail -n 5 "$out/bench_${dtype}_${faces}.txt"; continue; }
  done
done
echo
echo "| precision | faces/frame | FaceMagic fps | baseline fps | speed-up | peak MB (FaceMagic / baseline) |"
echo "|---|---:|---:|---:|---:|---|"
for dtype in fp16 fp32; do
  for faces in 1 6; do
    f="$out/bench_${dtype}_${faces}.txt"
    [ -f "$f" ] || continue
    fps=$(grep "fps, end to end" "$f" | awk '{print $(NF-1)" | "$NF}')
    mem=$(grep "peak memory, MB" "$f" | awk '{print $(NF-1)" / "$NF}')
    ratio=$(grep -o "[0-9.]*x end to end" "$f")
    echo "| $dtype | $faces | $fps | $ratio | $mem |"
  done
done
grep -h "device    :" "$out"/bench_*.txt | head -n 1
echo "full outputs: $out"
