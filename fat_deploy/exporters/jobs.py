"""Several exports at once (``fat-export --jobs``): one process per worker, the slowest converters first.

Each export is the same :func:`~fat_deploy.exporters.api.export` call, run in a fresh ``spawn`` process (torch's
thread pools do not survive ``fork``), so staging, verification and placement work exactly as in a single run;
stage messages come back through a queue for the progress display. Each process computes on its share of the cores
(:mod:`fat_deploy.common.threads`). Converters are mostly single-threaded Python, so on a machine with cores to
spare the wall time approaches that of the slowest converter.
"""

from __future__ import annotations

import multiprocessing
import queue
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from fat_deploy.common.threads import compute_on_share_of_cores
from fat_deploy.contract.reuse import reusing_conversions
from fat_deploy.exporters.api import FAILED, Artifact, export
from fat_deploy.precision import parse_precision
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


def _start_worker(stages: Any, processes: int) -> None:
    global _stages
    _stages = stages
    compute_on_share_of_cores(processes)  # N processes x all cores' threads would stall each other


def _run_in_worker(index: int, job: ExportJob) -> Artifact:
    return job.run(lambda message: _stages.put((index, message)))


def run_exports(jobs: Sequence[ExportJob], workers: int, on_stage: Callable[[int, str], None],
                on_done: Callable[[int, Artifact], None]) -> list[Artifact]:
    """Every job's Artifact, in the jobs' order; ``on_stage(index, message)`` reports progress and ``on_done(index,
    artifact)`` each finished export. With one worker (or one job) the exports run in this process, in order."""
    if workers <= 1 or len(jobs) <= 1:
        artifacts = []
        with reusing_conversions():  # a model's second precision starts from the first one's float graph
            for index, job in enumerate(jobs):
                artifacts.append(job.run(partial(on_stage, index)))
                on_done(index, artifacts[-1])
        return artifacts
    context = multiprocessing.get_context("spawn")
    stages = context.Queue()
    slowest_first = sorted(range(len(jobs)), key=lambda index: -get_format(jobs[index].format).conversion_weight)
    results: dict[int, Artifact] = {}
    processes = min(workers, len(jobs))
    with ProcessPoolExecutor(max_workers=processes, mp_context=context, initializer=_start_worker,
                             initargs=(stages, processes)) as pool:
        running: dict[Future[Artifact], int] = {pool.submit(_run_in_worker, i, jobs[i]): i for i in slowest_first}
        pending = set(running)
        try:
            while pending:
                finished, pending = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                _drain(stages, on_stage)
                for future in finished:
                    index = running[future]
                    results[index] = _outcome(future, jobs[index])
                    on_done(index, results[index])
        except BaseException:  # a user error raised in a worker, or Ctrl-C: start nothing more
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    _drain(stages, on_stage)
    return [results[index] for index in range(len(jobs))]


def _outcome(future: Future[Artifact], job: ExportJob) -> Artifact:
    """The job's Artifact; a worker process that died (killed, out of memory, a crash in native code) fails its
    job with one line instead of a traceback. Its staging folder, marked and no longer locked, goes with the next
    export into that folder."""
    try:
        return future.result()  # a user error (FatDeployError) raised in the worker is raised here
    except BrokenProcessPool:
        return Artifact(model=job.model, format=job.format, precision=parse_precision(job.precision), status=FAILED,
                        error="the export's worker process died (killed, out of memory, or a crash in native "
                              "code); run again with --jobs 1 --verbose to see the converter's output")


def _drain(stages: Any, on_stage: Callable[[int, str], None]) -> None:
    while True:
        try:
            index, message = stages.get_nowait()
        except queue.Empty:
            return
        on_stage(index, message)
