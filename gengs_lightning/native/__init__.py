"""Native CPU kernels, compiled on first use with the system's C++ compiler and loaded with ctypes.

The hot loops of the folded table (:mod:`gengs_lightning.distributions.grid`) are a few dozen
floating-point operations per row; as PyTorch ops they cost one dispatch per pass over the batch.
Here each kernel is a plain C++ source file next to this module, without PyTorch headers, so it
compiles in about a second: ``$CXX`` (default ``c++``) ``-O3 -march=native -ffp-contract=off``, into a
shared library in ``$GENGS_NATIVE_CACHE`` (default ``~/.cache/gengs_lightning/native``), named by the
hash of the source, the compiler, the flags and the CPU's feature flags (so a cache shared by different
machines keeps one build per CPU), and written atomically, so that concurrent processes (DDP ranks, test
workers) share it. No fused multiply-add: every operation rounds as PyTorch's does.

Where there is no compiler, or ``GENGS_NATIVE=0``, :func:`load` returns ``None`` and the callers keep
their eager PyTorch path (the same maths; slower on small tensors); a failed build warns once.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import warnings
from pathlib import Path

_SOURCES = Path(__file__).parent
_FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-pthread", "-std=c++17", "-ffp-contract=off", "-fno-math-errno")


def enabled() -> bool:
    """Whether native kernels may be used: ``GENGS_NATIVE`` is unset or not ``0``."""
    return os.environ.get("GENGS_NATIVE", "1") != "0"


def _machine() -> str:
    """The CPU the library is built for (``-march=native``): its architecture and feature flags."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    return f"{platform.machine()} {platform.processor()} {flags}"


def _cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gengs_lightning" / "native"
    return Path(os.environ.get("GENGS_NATIVE_CACHE", default))


def _compile(name: str) -> Path:
    """Build (or find) the shared library of ``<name>.cpp``; raises on a failed build."""
    source = _SOURCES / f"{name}.cpp"
    compiler = shlex.split(os.environ.get("CXX", "c++"))
    digest = hashlib.sha256(source.read_bytes() + repr((compiler, _FLAGS, _machine())).encode()).hexdigest()[:16]
    target = _cache_dir() / f"{name}-{digest}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            command = [*compiler, *_FLAGS, str(source), "-o", partial]
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
            os.replace(partial, target)  # atomic: another process either sees the whole library or none
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
    return target


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernels of ``gengs_lightning/native/<name>.cpp``, or ``None`` (eager fallback).

    Args:
        name: Base name of the source file.

    Returns:
        The loaded library, or ``None`` where native kernels are disabled or cannot be built (then one
        warning says why).
    """
    if not enabled():
        return None
    try:
        return ctypes.CDLL(str(_compile(name)))
    except (OSError, subprocess.SubprocessError) as error:  # no compiler, a failed or a hung build
        detail = getattr(error, "stderr", None) or str(error)
        warnings.warn(
            f"gengs_lightning: the native CPU kernel {name!r} could not be built ({detail.strip()[:300]}); "
            "using the eager PyTorch path (same results, slower). Install a C++ compiler or set CXX, "
            "or set GENGS_NATIVE=0 to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
