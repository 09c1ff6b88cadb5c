"""Shared fixtures: small, seeded models with realistic (non-trivial) normalisation statistics."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
from fake_runtime import FAKE_RUNTIME

from fat_deploy import registry
from fat_deploy.cli.export import main as fat_export
from fat_deploy.common.threads import compute_on_share_of_cores
from fat_deploy.models import create_model
from fat_deploy.models.synthetic import randomize_norm_stats

# Each xdist worker computes on its share of the cores: two workers with two torch threads each on two cores stalled
# each other's parallel regions, up to 5x (fat_deploy.common.threads).
if (WORKERS := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))) > 1:
    compute_on_share_of_cores(WORKERS)

# The longest end-to-end tests, started first and in this order (seconds in a clean-clone run here): `make test`
# hands each xdist worker one test at a time (--maxschedchunk 1; a worker starts with two), so the two workers
# finish together instead of one waiting for the other's last long test. Worker 1 starts with the first two,
# worker 2 with the next two; the rest go to whichever is free.
STARTED_FIRST = (
    "test_executorch_int8_modes_hold_accuracy_dynamic_without_calibration",  # ~2 min (two PT2E modes, three lowerings)
    "test_fat_b0_files_hold_on_aarch64_runtimes",  # ~35 s each: three conversions, three emulated runs
    "test_fp32_pte_is_verified_and_reports_delegation",  # ~100 s: builds the shared --format all exports
    "test_bundle_holds_what_each_platform_needs_and_is_placed_whole",  # ~55 s (five formats, two processes)
    "test_tflite_int8_static_holds_in_one_xnnpack_partition_and_a_quantized_stem_shows_the_damage",  # ~40 s
    "test_converters_are_quiet_unless_verbose",  # ~25 s
)


# What ran beside the slowest tests (the suite's time varies 2-5x run to run in the peers' export tests, unexplained):
# each test's wall-clock span (setup to teardown, as its worker reported it), and at the end of the run the tests
# whose spans overlapped each of the slowest few.
SPANS: dict[str, list[float]] = {}
OVERLAPS_SHOWN = 6


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    span = SPANS.setdefault(report.nodeid, [report.start, report.stop])
    span[0], span[1] = min(span[0], report.start), max(span[1], report.stop)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if len(SPANS) < 2:
        return
    terminalreporter.section("what ran beside the slowest tests")
    for nodeid, (start, stop) in sorted(SPANS.items(), key=lambda item: item[1][0] - item[1][1])[:OVERLAPS_SHOWN]:
        beside = [(min(stop, end) - max(start, begin), other) for other, (begin, end) in SPANS.items()
                  if other != nodeid and begin < stop and end > start]
        shown = ", ".join(f"{other.split('::')[-1]} {seconds:.0f}s" for seconds, other in sorted(beside, reverse=True)[:4])
        terminalreporter.write_line(f"{stop - start:.0f}s {nodeid.split('::')[-1]}: beside {shown or 'nothing'}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = getattr(item, "originalname", item.name)
        return STARTED_FIRST.index(name) if name in STARTED_FIRST else len(STARTED_FIRST)

    items.sort(key=rank)  # stable: the rest keep pytest's order


@pytest.fixture
def fat_b0() -> nn.Module:
    torch.manual_seed(0)
    return randomize_norm_stats(create_model("fat_b0"))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    """Random-init models are built from the global RNG: make every test deterministic."""
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def photo_calibrated_checkpoint(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """FAT-B0 weights with BatchNorm statistics recalibrated on real photos (closer to trained
    statistics than raw init), saved as a checkpoint. Used where quantization error is measured."""
    from fat_deploy.common.calibration import recalibrate_batchnorm
    from fat_deploy.models import get_spec

    torch.manual_seed(0)
    model = recalibrate_batchnorm(create_model("fat_b0"), get_spec("fat_b0"), (224, 224))
    path = tmp_path_factory.mktemp("weights") / "fat_b0_bn_recalibrated.pth"
    torch.save(model.eval().state_dict(), path)
    return path


@pytest.fixture(scope="session")
def trained_looking_checkpoint(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A FAT-B0 checkpoint whose BatchNorm statistics and GroupNorm affines are non-trivial (as trained ones are)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("trained") / "fat_b0_trained_looking.pth"
    torch.save(randomize_norm_stats(create_model("fat_b0")).state_dict(), path)
    return path


@pytest.fixture
def fake_runtime():  # type: ignore[no-untyped-def]
    """The tests' ``.npz`` runtime (tests/fake_runtime.py), registered for one test."""
    registry.register(FAKE_RUNTIME)
    try:
        yield FAKE_RUNTIME
    finally:
        registry.unregister(FAKE_RUNTIME)


@pytest.fixture(scope="session")
def trained_exports(tmp_path_factory: pytest.TempPathFactory, trained_looking_checkpoint: Path) -> dict[str, Any]:
    """One ``fat-export --format all`` run (FAT-B0, trained-looking weights, 224 px), its --json records by format.

    Shared by the tests that check what each runtime's plain export holds, so each converter runs once for them
    (ExecuTorch's lowering alone takes half a minute): the first xdist worker that needs it exports under a lock in
    the run's common temporary folder, the others read its records."""
    under_xdist = "PYTEST_XDIST_WORKER" in os.environ
    shared = (tmp_path_factory.getbasetemp().parent if under_xdist else tmp_path_factory.getbasetemp()) / "all_formats"
    shared.mkdir(exist_ok=True)
    records = shared / "records.json"
    with (shared / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not records.is_file():
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                code = fat_export(["--model", "fat_b0", "--format", "all", "--out", str(shared / "out"), "--jobs", "1",
                                   "--checkpoint", str(trained_looking_checkpoint), "--json"])
            assert code == 0, printed.getvalue()
            records.write_text(printed.getvalue())
    return {record["format"]: record for record in json.loads(records.read_text())}
