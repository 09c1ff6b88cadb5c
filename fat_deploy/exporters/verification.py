"""Verification: the artifact, run in its runtime, against the faithful fp32 PyTorch model."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fat_deploy.exporters.calibration import held_out_inputs, verification_inputs
from fat_deploy.exporters.registry import QUANTIZED, ExportFormat, ExportRequest, RuntimeUnavailable
from fat_deploy.exporters.verify import TOLERANCES, Comparison, Tolerance, compare

PASSED, NOT_VERIFIED, FAILED = "passed", "exported-not-verified", "failed"
DYNAMIC_BATCH_CHECKS = (1, 4)
SUMMARY_KEYS = ("max_abs_diff", "cosine_min", "top1_agreement", "top1_agreement_clear", "clear_inputs",
                "top5_overlap", "sqnr_db")


def reference_logits(model: nn.Module, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(chunk)).numpy() for chunk in np.array_split(inputs, max(1, len(inputs) // 4))])


def fp16_proxy(request: ExportRequest, inputs: np.ndarray, reference: np.ndarray) -> Comparison:
    """The converted model in float16 on PyTorch/CPU: catches fp16 overflow where the runtime can't run."""
    half = copy.deepcopy(request.model).half().eval()
    with torch.no_grad():
        outputs = half(torch.from_numpy(inputs).half()).float().numpy()
    return compare(reference, outputs, TOLERANCES["fp16"])


def verify_artifact(
    fmt: ExportFormat, request: ExportRequest, path: Path, tolerance: Tolerance, notes: list[str],
    calibrated_on: Sequence[str] = (), simulation: nn.Module | None = None,
) -> tuple[str, dict[str, Any]]:
    """Run the artifact in its runtime on the shipped photos (held-out ones for quantized modes: never the
    ``calibrated_on`` images) and compare with the faithful PyTorch model; structural checks too. Where the
    runtime cannot run here, ``simulation`` (the artifact's numerics in PyTorch) or a float16 proxy stands in.

    Returns the status and the manifest's ``verification`` record; problems are appended to ``notes``.
    """
    if request.precision in QUANTIZED:
        inputs, names = held_out_inputs(request.spec, request.img_size, list(calibrated_on))
    else:
        inputs, names = verification_inputs(request.spec, request.img_size)
    reference = reference_logits(request.reference, inputs)
    result: dict[str, Any] = {"inputs": names, "tolerance": tolerance.as_dict(), "runtime": fmt.runtime,
                              "reference": "fp32 PyTorch model (faithful form)"}
    problems = fmt.inspect(path, request)
    result["structure_problems"] = problems
    batches = DYNAMIC_BATCH_CHECKS if request.dynamic_batch else (request.batch,)
    comparisons: dict[str, Comparison] = {}
    try:
        for batch in batches:
            comparisons[f"batch{batch}"] = compare(reference, fmt.run(path, request, inputs, batch), tolerance)
    except RuntimeUnavailable as reason:
        result["runtime_available"] = False
        notes.append(f"numerics not verified on this host: {reason}")
        if simulation is not None:  # the quantized numerics, simulated in PyTorch
            proxy = compare(reference, reference_logits(simulation, inputs), tolerance)
            result["simulation_proxy"] = {
                "runtime": f"torch {torch.__version__} on CPU (fake quantization)",
                "covers": "int8 weights and activations as quantized for the artifact; fp16 compute not simulated",
                **proxy.as_dict()}
            if not proxy.passed:
                problems = [*problems, f"quantization simulation failed: {'; '.join(proxy.failures)}"]
        elif request.precision != "fp32":  # fp16 compute: catch overflow on a runtime that runs here
            proxy = fp16_proxy(request, inputs, reference)
            covers = "float16 compute" + ("" if request.precision == "fp16" else "; weight compression not simulated")
            result["fp16_proxy"] = {"runtime": f"torch {torch.__version__} float16 on CPU", "covers": covers,
                                    **proxy.as_dict()}
            if not proxy.passed:
                problems = [*problems, f"float16 proxy check failed: {'; '.join(proxy.failures)}"]
        result["runtime_unavailable_reason"] = str(reason)
        notes.extend(problems)
        return (FAILED if problems else NOT_VERIFIED), result
    result["runtime_available"] = True
    result["comparisons"] = {key: value.as_dict() for key, value in comparisons.items()}
    failures = [f"{key}: {f}" for key, value in comparisons.items() for f in value.failures]
    result["passed"] = not failures and not problems
    if failures or problems:
        notes.extend([*problems, *failures])
    return (PASSED if result["passed"] else FAILED), result


def summarize(result: dict[str, Any]) -> dict[str, Any] | None:
    """The worst comparison (or the proxy that stood in for the runtime), for the summary table."""
    comparisons = result.get("comparisons") or {}
    if not comparisons:
        for key, source in (("simulation_proxy", "simulated"), ("fp16_proxy", "fp16 proxy")):
            if proxy := result.get(key):
                return {"source": source, **{k: proxy[k] for k in SUMMARY_KEYS}}
        return None
    worst = max(comparisons.values(), key=lambda c: c["max_abs_diff"])
    return {"source": str(result["runtime"]), **{k: worst[k] for k in SUMMARY_KEYS}}
