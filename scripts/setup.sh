#!/usr/bin/env bash
# Create .venv and install medtl without ever pulling a CUDA torch onto a CPU machine.
#   torch is installed first, on its own (TORCH_SPEC, default torch==2.13.0: a CPU wheel on
#   these machines); everything else is installed with a constraints file that pins torch to
#   the installed version, so no dependency can replace it.
#   torchattacks is installed last, with --no-deps: its last release (3.5.1) pins requests~=2.25.1,
#   which must not bind the environment (medtl declares what torchattacks needs at run time).
#   `pip check` then reports exactly one line, "torchattacks 3.5.1 has requirement
#   requests~=2.25.1, but you have requests 2.x": that is expected; anything else is printed as
#   a warning.
# Usage: bash scripts/setup.sh   (VENV=.venv TORCH_SPEC=torch==2.13.0 EXTRAS=test,ray,track by default;
#   CONSTRAINTS=scripts/constraints-cpu.txt; CONSTRAINTS=/dev/null resolves the newest versions,
#   which is how that file is regenerated: see its header)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
PY=${PYTHON:-python3}
CONSTRAINTS=${CONSTRAINTS:-scripts/constraints-cpu.txt}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# setuptools too: Python 3.11's venv bundles setuptools 65.5, which has known advisories
"$VENV/bin/python" -m pip install -q --upgrade pip setuptools >/dev/null 2>&1 || true
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
fi
tv=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
cons=$(mktemp)
trap 'rm -f "$cons"' EXIT
{ echo "torch==$tv"; grep -v '^torch==' "$CONSTRAINTS" || true; } > "$cons"
"$VENV/bin/python" -m pip install -q -c "$cons" -e ".[${EXTRAS:-test,ray,track}]"
"$VENV/bin/python" -m pip install -q --no-deps "torchattacks==3.5.1"
broken=$("$VENV/bin/python" -m pip check 2>&1 | grep -v -e '^No broken requirements' \
         -e '^torchattacks 3\.5\.1 has requirement requests~=2\.25\.1' || true)
if [ -n "$broken" ]; then
  echo "warning: pip check reports more than the expected torchattacks/requests pin:" >&2
  echo "$broken" >&2
fi
"$VENV/bin/python" - <<'PY'
import torch, medtl
from medtl._compat import import_torchvision
tv = import_torchvision()
print(f"medtl {medtl.__version__} installed: torch {torch.__version__}, torchvision {tv.__version__}, "
      f"cuda={'yes' if torch.cuda.is_available() else 'no'}")
PY
