#!/usr/bin/env bash
# Create .venv and install medtl without ever pulling a CUDA torch onto a CPU machine.
#   torch is installed first, on its own (TORCH_SPEC, default torch==2.13.0: a CPU wheel on
#   these machines); everything else is installed with a constraints file that pins torch to
#   the installed version, so no dependency can replace it.
# Usage: bash scripts/setup.sh   (VENV=.venv TORCH_SPEC=torch==2.13.0 EXTRAS=test,ray,track by default)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
fi
tv=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
cons=$(mktemp)
trap 'rm -f "$cons"' EXIT
{ echo "torch==$tv"; grep -v '^torch==' scripts/constraints-cpu.txt; } > "$cons"
"$VENV/bin/python" -m pip install -q -c "$cons" -e ".[${EXTRAS:-test,ray,track}]"
"$VENV/bin/python" - <<'PY'
import torch, medtl
from medtl._compat import import_torchvision
tv = import_torchvision()
print(f"medtl {medtl.__version__} installed: torch {torch.__version__}, torchvision {tv.__version__}, "
      f"cuda={'yes' if torch.cuda.is_available() else 'no'}")
PY
