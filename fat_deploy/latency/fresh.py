"""What an app pays, measured in a process of its own: load, cold start and memory of one artifact.

The timed loop runs in fat-latency's own process, which has imported PyTorch, the exporters and every runtime, so its
peak resident memory says nothing about a model. Here a child Python imports only the runtime (through its standalone
adapter: :mod:`fat_deploy.common.probe`), loads the file, runs it once, then ``runs`` more times, and reports resident
memory deltas over its baseline after import (model load, first-run peak, steady peak) and the times of import, load
and first run, with the time from starting the process to the first result.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fat_deploy.common.probe import __file__ as probe_file
from fat_deploy.errors import FatDeployError

SECONDS_LIMIT = 600.0
KEPT_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_CACHE_HOME")


def measure_fresh_process(adapter: Path, artifact: Path, batch: int, img_size: tuple[int, int], threads: int,
                          runs: int) -> dict[str, Any]:
    """The child's report (see the module docstring), with ``start_to_first_result_ms`` and ``steady_median_ms``."""
    environment = {key: os.environ[key] for key in KEPT_VARIABLES if key in os.environ}
    environment["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-s", str(probe_file), "measure", str(adapter), str(artifact.resolve()), str(batch),
               str(img_size[0]), str(img_size[1]), str(threads), str(runs)]
    spawned = time.time()
    try:
        finished = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=SECONDS_LIMIT)
    except subprocess.TimeoutExpired:
        raise FatDeployError(f"the fresh-process measurement ran past {SECONDS_LIMIT:.0f} s") from None
    lines = finished.stdout.strip().splitlines()
    if finished.returncode != 0 or not lines:
        errors = [line for line in finished.stderr.splitlines() if line.strip()]
        raise FatDeployError(f"the fresh-process measurement failed (exit {finished.returncode}): "
                             f"{errors[-1][:200] if errors else 'no message'}")
    report: dict[str, Any] = json.loads(lines[-1])
    first_result = report.pop("first_result_unix")
    report.pop("started_unix")
    steady = report.pop("steady_ms")
    report["start_to_first_result_ms"] = round((first_result - spawned) * 1e3, 1)
    report["steady_median_ms"] = round(statistics.median(steady), 3) if steady else None
    report["steady_runs"] = len(steady)
    return report
