"""Timing shared by the benchmarks: wall and process-CPU seconds, and paired runs against a baseline.

CPU seconds are what a single-threaded run costs even when other programs share the cores; ratios are taken from
runs of the measured function and its baseline alternated, so a drifting machine load stays out of them::

    wall, cpu = timed(lambda: gen.render([sample]), gen.device)
    figures = paired(lambda: gen.forward_from(layer, act, [sample]), lambda: gen.render([sample]), 5, gen.device)
    figures["ratio"]        # median of the paired cost ratios (CPU time on the CPU, wall time on GPUs)
    with Clock() as clock:
        ...
    clock.cpu, clock.wall
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device | None = None) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call, waiting for a CUDA device to finish."""
    _sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def paired(fn: Callable[[], object], baseline: Callable[[], object], repeats: int,
           device: torch.device) -> dict[str, float]:
    """Medians of ``fn`` and ``baseline`` run alternately (``s``, ``cpu_s``, ``base_s``, ``base_cpu_s``) and the
    median of their paired ratios (``ratio``: CPU time on the CPU, wall time on GPUs)."""
    runs = [(timed(fn, device), timed(baseline, device)) for _ in range(max(1, repeats))]
    pick = 1 if device.type == "cpu" else 0
    med = statistics.median
    return {"s": med(a[0] for a, _ in runs), "cpu_s": med(a[1] for a, _ in runs),
            "base_s": med(b[0] for _, b in runs), "base_cpu_s": med(b[1] for _, b in runs),
            "ratio": med(a[pick] / max(b[pick], 1e-9) for a, b in runs)}


class Clock:
    """CPU and wall seconds of a block: ``with Clock() as c: ...; c.cpu, c.wall``."""

    def __enter__(self) -> "Clock":
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu, self.wall = time.process_time() - self._cpu, time.perf_counter() - self._wall
