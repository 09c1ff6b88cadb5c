"""PyTorch eager: CPU threads via torch.set_num_threads; CUDA timed with synchronisation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from fat_deploy.contract.session import Backend, BackendError, LoadRequest, OpTime, Runner


class TorchRunner(Runner):
    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype, channels_last: bool) -> None:
        self.model, self.device, self.dtype, self.channels_last = model, device, dtype, channels_last

    def prepare(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch).to(self.device, self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.no_grad()
    def run(self, prepared: Any) -> Any:
        out = self.model(prepared)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out

    def logits(self, prepared: Any) -> np.ndarray:
        logits: np.ndarray = self.run(prepared).float().cpu().numpy()
        return logits

    def op_times(self, prepared: Any, runs: int, trace: Path | None = None) -> list[OpTime]:
        """torch.profiler self time per ATen op (eager runs have no graph nodes: ``name`` is the op)."""
        from torch.profiler import ProfilerActivity, profile

        self.run(prepared)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        with profile(activities=activities) as profiler:
            for _ in range(runs):
                self.run(prepared)
        if trace is not None:
            profiler.export_chrome_trace(str(trace))
        times = []
        for average in profiler.key_averages():
            self_us = average.self_device_time_total if self.device.type == "cuda" else average.self_cpu_time_total
            if self_us > 0 and average.key.startswith("aten::"):
                times.append(OpTime(name=average.key, op_type=average.key.removeprefix("aten::"), microseconds=self_us,
                                    count=average.count))
        return times

    def peak_device_memory_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20


class TorchBackend(Backend):
    name = "torch"
    package = "torch"
    devices = ("cpu", "cuda")
    profiler = "torch.profiler"

    def unavailable_reason(self, device: str) -> str | None:
        if reason := super().unavailable_reason(device):
            return reason
        if device == "cuda" and not torch.cuda.is_available():
            return "cuda: no CUDA device"
        return None

    def load(self, request: LoadRequest) -> Runner:
        if request.model is None:
            raise BackendError("the torch backend runs a model, not an artifact file")
        if request.precision not in ("fp32", "fp16"):
            raise BackendError(f"torch backend supports fp32 and fp16, not {request.precision}")
        if request.precision == "fp16" and request.device == "cpu":
            raise BackendError("torch fp16 timing needs --device cuda (CPU half kernels are not a deployment target)")
        torch.set_num_threads(request.threads)
        device = torch.device(request.device)
        dtype = torch.float16 if request.precision == "fp16" else torch.float32
        model = request.model.to(device=device, dtype=dtype).eval()
        if request.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        return TorchRunner(model, device, dtype, request.channels_last)
