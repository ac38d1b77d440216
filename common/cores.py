"""How many cores a process may use: the ones not busy now (other work may share the machine)."""
from __future__ import annotations

import os
import time

import torch


def idle_cores() -> int:
    """Threads for a training process, or environments for an evaluation: the cores not busy now,
    at least 1, at most torch's default.
    Measured on 2 cores (bench/README.md, "Threads of the base stage"): 2 threads are 1.56x faster
    than 1 when the machine is idle, but 0.60x of 1 when one other job is running."""
    busy = busy_cores()
    if busy is None:  # no /proc/stat (not Linux): the 1-minute load average
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):
            busy = 0.0
    return max(1, min(torch.get_num_threads(), round((os.cpu_count() or 1) - busy)))


def busy_cores(interval: float = 0.25) -> float | None:
    """Cores busy over the next `interval` seconds, from /proc/stat; None where it cannot be read.
    Not the load average: that trails by minutes, so the `pip install` that just ran counts as a
    running job (it chose 1 thread on an idle machine right after the Quickstart's install)."""
    try:
        total0, idle0 = _cpu_times()
        time.sleep(interval)
        total1, idle1 = _cpu_times()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / (total1 - total0))


def _cpu_times() -> tuple[int, int]:
    """(all, idle) clock ticks of every CPU since boot: /proc/stat's first line is user, nice,
    system, idle, iowait, irq, softirq, steal (time stolen by other machines counts as busy)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    return sum(ticks), ticks[3] + ticks[4]
