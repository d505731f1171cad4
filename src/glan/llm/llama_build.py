"""How llama-cpp-python is rebuilt for any CPU of its kind, and the command that does it.

pip compiles llama.cpp from source (PyPI has no Linux wheel) with -march=native: on some CPUs
(AVX-512/AMX Xeons) that build segfaults in decode. scripts/_venv.sh builds with the flags
below instead (keep the two in step: tests/test_local_backend.py compares them).
"""

from __future__ import annotations

import importlib.metadata
import platform
import shlex
import sys
from pathlib import Path

#: What glan needs of llama.cpp: no multimodal library.
ONLY_WHAT_GLAN_USES = "-DLLAVA_BUILD=OFF"
#: x86-64-v3 (AVX2, FMA, F16C, BMI2) instead of every feature of the CPU it was built on.
X86_64_V3 = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where there is no /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def portable_cmake_args(machine: str | None = None, flags: set[str] | None = None) -> str:
    """CMAKE_ARGS for a llama.cpp that runs on any CPU of this kind: x86-64-v3 where the CPU
    has AVX2, else llama.cpp's generic build."""
    machine = machine or platform.machine()
    flags = cpu_flags() if flags is None else flags
    if machine in ("x86_64", "AMD64") and "avx2" in flags:
        return f"{ONLY_WHAT_GLAN_USES} {X86_64_V3}"
    return f"{ONLY_WHAT_GLAN_USES} -DGGML_NATIVE=OFF"


def reinstall_command(python: str | None = None) -> str:
    """The shell command that rebuilds the installed llama-cpp-python portably: from source
    (--no-binary), not from pip's cache (which holds the native build under the same name),
    and only it (--no-deps)."""
    try:
        spec = f"llama-cpp-python=={importlib.metadata.version('llama-cpp-python')}"
    except importlib.metadata.PackageNotFoundError:
        spec = "llama-cpp-python"
    pip = [python or sys.executable, "-m", "pip", "install", "--force-reinstall", "--no-deps"]
    pip += ["--no-cache-dir", "--no-binary", "llama-cpp-python", spec]
    return f'CMAKE_ARGS="{portable_cmake_args()}" {shlex.join(pip)}'
