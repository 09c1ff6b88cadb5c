"""Timing statistics: median is the headline; spread and tails are reported beside it."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TimingStats:
    """Summary of per-invocation wall times in milliseconds."""

    runs: int
    min_ms: float
    median_ms: float
    mean_ms: float
    std_ms: float
    p90_ms: float
    p99_ms: float
    images_per_s: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


NOISY_STD_SHARE, NOISY_P90_RATIO = 0.10, 1.15  # a quiet 2-core host here: std 2-4% of the median, p90 1.03x


def noise_problem(stats: TimingStats) -> str | None:
    """Why a measurement looks disturbed (spread or tail far beyond a quiet machine's), or None."""
    if stats.runs < 5 or stats.median_ms <= 0:
        return None
    share, tail = stats.std_ms / stats.median_ms, stats.p90_ms / stats.median_ms
    if share <= NOISY_STD_SHARE and tail <= NOISY_P90_RATIO:
        return None
    return (f"noisy timing: std {stats.std_ms:.2f} ms ({share:.0%} of the median), p90 {tail:.2f}x the median; "
            "something else may be using the CPU: re-run on an idle machine (or with --min-seconds)")


def summarize(samples_ms: list[float] | np.ndarray, batch: int = 1) -> TimingStats:
    """Statistics of ``samples_ms`` (one entry per invocation of ``batch`` images)."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    if samples.size == 0:
        raise ValueError("no timing samples")
    if batch < 1:
        raise ValueError("batch must be >= 1")
    median = float(np.median(samples))
    return TimingStats(
        runs=int(samples.size),
        min_ms=float(samples.min()),
        median_ms=median,
        mean_ms=float(samples.mean()),
        std_ms=float(samples.std(ddof=1)) if samples.size > 1 else 0.0,
        p90_ms=float(np.percentile(samples, 90)),
        p99_ms=float(np.percentile(samples, 99)),
        images_per_s=batch * 1000.0 / median if median > 0 else math.inf,
    )


BUSY_HOST_SHARE = 0.20  # other processes' CPU time during the timed runs, as a share of all cores' time


class HostLoad:
    """Other processes' CPU time while something is timed: /proc/stat's busy time of all cores minus this process's
    own CPU time (Linux; elsewhere nothing is known and nothing is claimed)."""

    def __init__(self) -> None:
        self.started = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        except (OSError, IndexError):
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        own = os.times()
        return (user + nice + system + irq + softirq + steal) / ticks, own.user + own.system, time.monotonic()

    def others_share(self) -> float | None:
        """Other processes' share of all cores' time since this object was made, or None."""
        ended = self._sample()
        if self.started is None or ended is None:
            return None
        busy, own, wall = (after - before for after, before in zip(ended, self.started))
        cores = os.cpu_count() or 1
        return max(0.0, busy - own) / (wall * cores) if wall > 0 else None


def busy_host_problem(share: float | None) -> str | None:
    """The warning when other processes used much of the CPU while timing, else None."""
    if share is None or share <= BUSY_HOST_SHARE:
        return None
    return (f"busy host: other processes used {share:.0%} of the CPU time of all cores during the timed runs; "
            "the timings share the machine with them")
