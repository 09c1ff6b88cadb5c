"""Processes computing side by side share the cores (fat_deploy.common.threads)."""

from __future__ import annotations

import os

import pytest
import torch

from fat_deploy.common import threads
from fat_deploy.common.threads import compute_on_share_of_cores, share_of_cores


@pytest.mark.parametrize(("cores", "processes", "expected"), [(2, 2, 1), (8, 2, 4), (8, 3, 2), (2, 4, 1), (4, 0, 4)])
def test_each_process_gets_its_share_and_at_least_one_core(monkeypatch: pytest.MonkeyPatch, cores: int,
                                                           processes: int, expected: int) -> None:
    monkeypatch.setattr(threads, "available_cores", lambda: cores)
    assert share_of_cores(processes) == expected


def test_the_share_sets_torch_and_the_children_openmp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "available_cores", lambda: 6)
    monkeypatch.setenv("OMP_NUM_THREADS", "99")
    before = torch.get_num_threads()
    try:
        assert compute_on_share_of_cores(3) == 2
        assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
    finally:
        torch.set_num_threads(before)
