"""Several exports at once (``fat-export --jobs``): one process per worker, the slowest converters first.

Each export is the same :func:`~fat_deploy.exporters.api.export` call, run in a fresh ``spawn`` process (torch's
thread pools do not survive ``fork``), so staging, verification and placement work exactly as in a single run;
stage messages come back through a queue for the progress display. Converters are mostly single-threaded Python,
so on a machine with cores to spare the wall time approaches that of the slowest converter.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from fat_deploy.exporters.api import Artifact, export
from fat_deploy.registry import get_format

POLL_SECONDS = 0.2


@dataclass(frozen=True)
class ExportJob:
    """One export: its model, format, precision and folder, and the rest of export()'s keyword arguments."""

    model: str
    format: str
    precision: str
    out: Path
    arguments: dict[str, Any] = field(default_factory=dict)

    def run(self, on_stage: Callable[[str], None]) -> Artifact:
        return export(self.model, self.format, self.precision, self.out, on_stage=on_stage, **self.arguments)


_stages: Any = None  # the worker's end of the stage queue


def _start_worker(stages: Any) -> None:
    global _stages
    _stages = stages


def _run_in_worker(index: int, job: ExportJob) -> Artifact:
    return job.run(lambda message: _stages.put((index, message)))


def run_exports(jobs: Sequence[ExportJob], workers: int, on_stage: Callable[[int, str], None],
                on_done: Callable[[int, Artifact], None]) -> list[Artifact]:
    """Every job's Artifact, in the jobs' order; ``on_stage(index, message)`` reports progress and ``on_done(index,
    artifact)`` each finished export. With one worker (or one job) the exports run in this process, in order."""
    if workers <= 1 or len(jobs) <= 1:
        artifacts = []
        for index, job in enumerate(jobs):
            artifacts.append(job.run(partial(on_stage, index)))
            on_done(index, artifacts[-1])
        return artifacts
    context = multiprocessing.get_context("spawn")
    stages = context.Queue()
    slowest_first = sorted(range(len(jobs)), key=lambda index: -get_format(jobs[index].format).conversion_weight)
    results: dict[int, Artifact] = {}
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context, initializer=_start_worker,
                             initargs=(stages,)) as pool:
        running: dict[Future[Artifact], int] = {pool.submit(_run_in_worker, i, jobs[i]): i for i in slowest_first}
        pending = set(running)
        while pending:
            finished, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            _drain(stages, on_stage)
            for future in finished:
                index = running[future]
                results[index] = future.result()  # a user error raised in a worker is raised here
                on_done(index, results[index])
    _drain(stages, on_stage)
    return [results[index] for index in range(len(jobs))]


def _drain(stages: Any, on_stage: Callable[[int, str], None]) -> None:
    while True:
        try:
            index, message = stages.get_nowait()
        except queue.Empty:
            return
        on_stage(index, message)
