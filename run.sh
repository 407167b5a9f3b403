#!/usr/bin/env bash
# ./run.sh        set up (venv, requirements, default model) and serve
# ./run.sh test   the same set-up, plus the vLLM engine and test requirements, then the test suite
set -euo pipefail
cd "$(dirname "$0")"

MODE="${1:-serve}"
[ $# -gt 0 ] && shift
VENV="${JARVIS_VENV:-.venv}"

log() { printf '[run.sh] %s\n' "$*" >&2; }

find_python() {
  for candidate in python3.11 python3.12 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  log "Python 3.10 or newer is required (3.11 recommended)"; exit 1
}

# The engine comes from the environment, else from .env, else llama_cpp.
configured_engine() {
  if [ -n "${JARVIS_INFERENCE_ENGINE:-}" ]; then echo "$JARVIS_INFERENCE_ENGINE"; return; fi
  if [ -f .env ]; then
    local value
    value=$(sed -n 's/^[[:space:]]*JARVIS_INFERENCE_ENGINE[[:space:]]*=[[:space:]]*//p' .env | tail -n 1 | tr -d "\"' \r")
    if [ -n "$value" ]; then echo "$value"; return; fi
  fi
  echo llama_cpp
}

have_nvidia_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# Install a requirements file only when it changed since the last successful install.
install_requirements() {
  local file="$1"
  local stamp="$VENV/.installed-${file//\//_}.sha256" digest
  digest=$(sha256sum "$file" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; then return 0; fi
  log "installing $file"
  if [ "$file" = requirements-base.txt ] && have_nvidia_gpu; then
    export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_CUDA=on}"
  fi
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$file"
  echo "$digest" > "$stamp"
}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    local python
    python=$(find_python)
    log "creating $VENV with $python"
    "$python" -m venv "$VENV"
  fi
  install_requirements requirements-base.txt
  log "preparing the model"
  "$VENV/bin/python" -m service.model_files
}

case "$MODE" in
  serve)
    setup
    exec "$VENV/bin/python" main.py "$@"
    ;;
  test)
    setup
    install_requirements tests/requirements.txt
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  *)
    log "usage: ./run.sh [serve|test] [args...]"; exit 2
    ;;
esac
