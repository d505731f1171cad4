# Sourced by scripts/glan and scripts/test: make .venv and install glan with the given extras,
# again only when pyproject.toml changed since the last install.

# llama-cpp-python has no prebuilt wheel for Linux on PyPI, so the first install compiles
# llama.cpp. Only what glan uses is built: no multimodal library (LLAVA_BUILD=OFF; llama.cpp's
# tests, tools, examples and server are already off when it is built as a subproject). On
# x86-64 with AVX2 the build targets x86-64-v3 instead of -march=native: a native build on
# CPUs with AVX-512/AMX crashed in decode here, and a portable wheel can be reused from pip's
# cache by any machine of the kind. Set CMAKE_ARGS yourself to choose otherwise.
llama_cmake_args() {
  local args="-DLLAVA_BUILD=OFF"
  if [ "$(uname -m)" = x86_64 ] && grep -qw avx2 /proc/cpuinfo 2>/dev/null; then
    args="$args -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
  fi
  echo "$args"
}

# pip -v with everything but the compile steps filtered out, printed every ~10 s, so the first
# install shows life instead of one silent line.
install_llama_cpp() {
  local spec="$1" start=$SECONDS last=-10 line n total
  echo "glan: installing llama-cpp-python (the first time on a machine it compiles llama.cpp," \
    "about 3 minutes on 2 free cores, more on a busy machine; later a cached wheel installs in seconds)" >&2
  set +e
  CMAKE_ARGS="${CMAKE_ARGS:-$(llama_cmake_args)}" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$venv/bin/python" -m pip install -v --disable-pip-version-check "$spec" 2>&1 |
    while IFS= read -r line; do
      if [[ $line =~ \[([0-9]+)/([0-9]+)\]\  ]]; then
        n=${BASH_REMATCH[1]} total=${BASH_REMATCH[2]}
        if ((SECONDS - last >= 10 || n == total)); then
          echo "glan: compiling llama.cpp: step $n of $total ($((SECONDS - start)) s)" >&2
          last=$SECONDS
        fi
      elif [[ $line =~ ^(ERROR|error:) ]]; then
        echo "$line" >&2
      fi
    done
  local rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then
    echo "glan: building llama-cpp-python failed (see the error above); needs gcc, g++ and cmake" >&2
    return "$rc"
  fi
  echo "glan: llama-cpp-python ready after $((SECONDS - start)) s" >&2
}

ensure_venv() {
  local extras="$1"
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  venv="$root/.venv"
  local stamp="$venv/.installed-$extras"
  if [ ! -x "$venv/bin/python" ]; then
    echo "glan: creating $venv" >&2
    python3 -m venv "$venv"
  fi
  if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    echo "glan: installing glan[$extras] into $venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
    if ! "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
      local spec
      spec="$(grep -o '"llama-cpp-python[^"]*"' "$root/pyproject.toml" | head -1 | tr -d '"')"
      install_llama_cpp "${spec:-llama-cpp-python}"
    fi
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root[$extras]" >&2
    touch "$stamp"
  fi
}
