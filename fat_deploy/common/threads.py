"""Processes that compute side by side share the host's cores instead of each taking all of them.

torch's OpenMP team has one thread per core by default. Two such processes on two cores put four threads on two
cores, and every parallel region then waits at its barrier for a thread the scheduler has parked: measured here
(2-core AMD EPYC), a TFLite int8 export beside a peer's export took 78 s and 46 s with two threads each, 50 s and
20 s with one (alone: 40 s and 17 s). ``fat-export --jobs N`` and the test workers therefore give each process its
share. Runtimes' own sessions are not touched here: verification already runs them on one thread.
"""

from __future__ import annotations

import os

import torch

from fat_deploy.environment import available_cores


def share_of_cores(processes: int) -> int:
    """Cores per process when ``processes`` compute at once on this host (at least one)."""
    return max(1, available_cores() // max(1, processes))


def compute_on_share_of_cores(processes: int) -> int:
    """Set this process's torch intra-op threads, and ``OMP_NUM_THREADS`` for the processes it starts, to its share
    of the cores when ``processes`` compute at once; the thread count set."""
    threads = share_of_cores(processes)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    return threads
