# Shared set-up of the GPU scripts (sourced by gpu_check.sh and gpu_vgg16.sh): run from the
# repository root, the settings every script reads, the carried wheels installed, and
# visiontool importable from this checkout. Set LOG_NAME before sourcing.
set -u -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
PY=${PYTHON:-python3}
LOG=${OUT:-runs/$LOG_NAME}
mkdir -p "$LOG"
if ls .whl/*.whl >/dev/null 2>&1; then  # the GPU machine has no package index (gpu_check.sh)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
VT=("$PY" -m visiontool)
