#!/usr/bin/env bash
# `make test`: the main suite in .venv, and the SkyRL plug-in's tests in .venv-skyrl (SkyRL pins
# transformers and peft). The SkyRL environment is built while the main suite runs.
set -uo pipefail
cd "$(dirname "$0")/.."

log=.venv-skyrl.install.log
MHPO_VENV=.venv-skyrl MHPO_EXTRAS=skyrl,dev bash scripts/bootstrap.sh > "$log" 2>&1 &
skyrl_env=$!

.venv/bin/python -m pytest -q --durations=15
main=$?

if ! wait "$skyrl_env"; then
  echo "building .venv-skyrl failed; its log ($log) ends:" >&2
  tail -n 30 "$log" >&2
  exit 1
fi
.venv-skyrl/bin/python -m pytest -q tests/test_skyrl.py docs/skyrl.md src/mhpo/integrations/skyrl.py
skyrl=$?
exit $(( main != 0 || skyrl != 0 ))
