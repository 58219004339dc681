"""The device a benchmark script runs on: parsing ``--device``, its name, synchronisation and peak memory."""

from __future__ import annotations

import resource

import torch


def parse_device(text: str) -> torch.device:
    """``--device``: ``cpu``, ``cuda`` or ``cuda:N``, checked against what this machine has.

    Raises:
        SystemExit: Naming the value and what is accepted, for anything else or a CUDA device that is not there.
    """
    try:
        device = torch.device(text)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu, cuda or cuda:N; got {text!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {text}: no CUDA device here (torch {torch.__version__}); use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SystemExit(f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def describe(device: torch.device) -> str:
    """The device in words: the GPU's name and CUDA version, or the CPU's thread count."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device}), CUDA {torch.version.cuda}"
    return f"CPU, {torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU), before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak of :func:`peak_memory_mib` (CUDA; a process's resident peak cannot be reset)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """Peak allocated CUDA memory since :func:`reset_peak_memory`, or the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
