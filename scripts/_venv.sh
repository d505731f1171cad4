# Sourced by scripts/glan and scripts/test: make .venv and install glan with the given extras,
# again only when pyproject.toml changed since the last install.
ensure_venv() {
  local extras="$1"
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  venv="$root/.venv"
  local stamp="$venv/.installed-$extras"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    echo "glan: installing into $venv (the first time builds llama-cpp-python: ~5 min on 2 cores)" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root[$extras]" >&2
    touch "$stamp"
  fi
}
