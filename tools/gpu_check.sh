#!/usr/bin/env bash
# The GPU checks in one run, on a machine with an NVIDIA GPU: every test this
# environment can run (the CUDA ones included; those that need TensorFlow skip),
# the CLI on CUDA, and benchmarks/gpu_check.py.  Needs Python with numpy, pandas,
# pytest, hypothesis and onnxruntime-gpu; ORT_GPU_SITE names a folder holding an
# unpacked onnxruntime-gpu when it is not installed.  The CUDA and cuDNN libraries
# are taken from the nvidia-* pip packages of that Python.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH="${ORT_GPU_SITE:+$ORT_GPU_SITE:}$PWD"
libs=$(python3 - <<'PY'
import glob, os, site
dirs = {os.path.dirname(p) for d in site.getsitepackages() for p in glob.glob(d + "/nvidia/**/lib*.so*", recursive=True)}
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
python3 -c 'import onnxruntime as o; print("onnxruntime", o.__version__, o.get_available_providers())' 2>&1 | tee "$OUT/providers.log"
python3 -m pytest -q -p no:cacheprovider -rs tests 2>&1 | tee "$OUT/pytest.log" | tail -25
for precision in fp32 int8; do
  python3 -m mnist_onnx predict --provider cuda --precision "$precision" 2>&1 | tee -a "$OUT/cli.log"
done
python3 -m mnist_onnx predict --provider auto 2>&1 | tee -a "$OUT/cli.log"
PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log" | tail -30
