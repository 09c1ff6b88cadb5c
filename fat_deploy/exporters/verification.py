"""Verification: the artifact, run in its runtime, against the faithful fp32 PyTorch model."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from fat_deploy.common.aarch64 import CPU_MODEL, EmulationError, run_emulated
from fat_deploy.common.calibration import held_out_inputs, verification_inputs
from fat_deploy.common.departure import Departure, locate_departure
from fat_deploy.common.evaluation import accuracy, judging_problem
from fat_deploy.common.fp16 import Float16Check, check_fp16
from fat_deploy.common.verify import PROBABILITY_FLOOR, TOLERANCES, Comparison, Tolerance, compare
from fat_deploy.contract.formats import QUANTIZED, ExportFormat, ExportRequest, RuntimeUnavailable
from fat_deploy.models.deploy import to_deploy
from fat_deploy.precision import Precision


class Status(StrEnum):
    """An export's outcome (the manifest and ``--json`` carry its value)."""

    PASSED = "passed"
    NOT_VERIFIED = "exported-not-verified"  # written, but no runtime here could run it (said why)
    FAILED = "failed"


PASSED, NOT_VERIFIED, FAILED = Status.PASSED, Status.NOT_VERIFIED, Status.FAILED
DYNAMIC_BATCH_CHECKS = (1, 4)
SUMMARY_KEYS = ("max_abs_diff", "cosine_min", "top1_agreement", "top1_agreement_clear", "clear_inputs",
                "top5_overlap", "sqnr_db")


def reference_logits(model: nn.Module, inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        chunks = np.array_split(inputs, max(1, len(inputs) // 4))
        return np.concatenate([model(torch.from_numpy(chunk)).numpy() for chunk in chunks])


def log_probabilities(logits: np.ndarray) -> np.ndarray:
    """log(softmax), floored as the artifacts' log-probabilities are (``PROBABILITY_FLOOR``)."""
    probabilities = torch.softmax(torch.from_numpy(logits).double(), dim=-1).numpy()
    floored: np.ndarray = np.log(np.maximum(probabilities, PROBABILITY_FLOOR)).astype(np.float32)
    return floored


def centred(log_probs: np.ndarray) -> np.ndarray:
    """Log-probabilities minus their mean per image: the logits minus theirs (softmax drops a constant), so an
    artifact that outputs probabilities is compared like one that outputs logits, cosine and SQNR included."""
    centred_values: np.ndarray = log_probs - log_probs.mean(axis=-1, keepdims=True)
    return centred_values


def float16_check(request: ExportRequest, inputs: np.ndarray) -> tuple[Float16Check, dict[str, Any]]:
    """The converted model in simulated float16 arithmetic (storage, and accumulation) against its float32 self,
    and the manifest's record of it (with the float16-safe norm rewrite that was applied)."""
    check = check_fp16(request.model, inputs, TOLERANCES[Precision.FP16])
    scales = request.float16_norm_scales
    rewrite = {"norms": len(scales), "scaled": sum(1 for s in scales.values() if s != 1.0),
               "smallest_scale": min(scales.values(), default=1.0),
               "what": "each norm's input times a power of two, eps times its square (exact; "
                       "fat_deploy.models.float16_norms)"}
    return check, {**check.as_dict(), "float16_safe_norms": rewrite}


def float16_note(fmt: ExportFormat, request: ExportRequest, check: Float16Check) -> str | None:
    """The summary line for a float32 file that devices may run in float16 and that fails in float16 arithmetic."""
    if request.precision != Precision.FP32 or not check.failures:
        return None
    return (f"warning: a float32 file, but {fmt.float16_on_devices} run it in float16, and in simulated float16 "
            f"arithmetic it fails: {'; '.join(check.failures)}")


def verify_artifact(
    fmt: ExportFormat, request: ExportRequest, path: Path, tolerance: Tolerance, notes: list[str],
    calibrated_on: Sequence[str] = (), simulation: nn.Module | None = None,
) -> tuple[Status, dict[str, Any]]:
    """Run the artifact in its runtime on the shipped photos (held-out ones for quantized modes: never the
    ``calibrated_on`` images) and compare with the faithful PyTorch model; structural checks too. Where the
    runtime cannot run here, ``simulation`` (the artifact's numerics in PyTorch) or a float16 proxy stands in.
    With ``request.evaluation`` (--eval-dir), top-1/top-5 of model and artifact are measured, and a quantized
    artifact is judged by its top-1 drop instead of by its logits metrics.

    Returns the status and the manifest's ``verification`` record; problems are appended to ``notes``.
    """
    if request.precision in QUANTIZED:
        inputs, names = held_out_inputs(request.spec, request.img_size, list(calibrated_on))
    else:
        inputs, names = verification_inputs(request.spec, request.img_size)
    reference = reference_logits(request.reference, inputs)
    as_scores: Callable[[np.ndarray], np.ndarray] = lambda outputs: outputs  # noqa: E731
    if fmt.outputs_probabilities(request):  # run() gives log-probabilities: compare both sides centred
        as_scores, reference = centred, centred(log_probabilities(reference))
    result: dict[str, Any] = {"inputs": names, "tolerance": tolerance.as_dict(), "runtime": fmt.runtime,
                              "reference": "fp32 PyTorch model (faithful form)"}
    problems = fmt.inspect(path, request)
    result["structure_problems"] = problems
    if request.precision == Precision.FP16 or (request.precision == Precision.FP32 and fmt.float16_on_devices):
        check, result["fp16_check"] = float16_check(request, inputs)
        notes.append(f"float16 arithmetic (simulated): {check.summary_line()}")
        if request.precision == Precision.FP16:
            problems = [*problems, *check.failures]
        elif (warning := float16_note(fmt, request, check)) is not None:
            notes.append(warning)
    batches = DYNAMIC_BATCH_CHECKS if request.dynamic_batch else (request.batch,)
    comparisons: dict[str, Comparison] = {}
    try:
        for batch in batches:
            comparisons[f"batch{batch}"] = compare(reference, as_scores(fmt.run(path, request, inputs, batch)), tolerance)
        judged_by_accuracy = evaluate(request, result, lambda x: fmt.run(path, request, x, request.batch),
                                      f"{fmt.runtime} running the artifact")
    except RuntimeUnavailable as reason:
        result["runtime_available"] = False
        notes.append(f"numerics not verified on this host: {reason}")
        if simulation is not None:  # the quantized numerics, simulated in PyTorch
            proxy = compare(reference, reference_logits(simulation, inputs), tolerance)
            result["simulation_proxy"] = {
                "runtime": f"torch {torch.__version__} on CPU (fake quantization)",
                "covers": "int8 weights and activations as quantized for the artifact; fp16 compute not simulated",
                **proxy.as_dict()}
            judged_by_accuracy = evaluate(request, result, lambda x: reference_logits(simulation, x),
                                          "the quantization simulation in PyTorch")
            if not proxy.passed and not judged_by_accuracy:
                problems = [*problems, f"quantization simulation failed: {'; '.join(proxy.failures)}"]
        elif request.precision != Precision.FP32:  # computes in float16 on the device: simulate that here
            if "fp16_check" not in result:
                check, result["fp16_check"] = float16_check(request, inputs)
                problems = [*problems, *check.failures]
            storage = result["fp16_check"]["results"][0]["comparison"]
            covers = "float16 storage and accumulation (fat_deploy.common.fp16)" + (
                "" if request.precision == Precision.FP16 else "; weight compression not simulated")
            result["fp16_proxy"] = {"runtime": f"torch {torch.__version__} on CPU, simulated", "covers": covers,
                                    **storage}
        if (drop := accuracy_problem(result)) is not None:
            problems = [*problems, drop]
        result["runtime_unavailable_reason"] = str(reason)
        notes.extend(problems)
        return (FAILED if problems else NOT_VERIFIED), result
    result["runtime_available"] = True
    result["comparisons"] = {key: value.as_dict() for key, value in comparisons.items()}
    failures = [f"{key}: {f}" for key, value in comparisons.items() for f in value.failures]
    if failures and judged_by_accuracy:  # reported, not gating: the task accuracy judges a quantized artifact
        notes.append("logits metrics outside the proxy tolerance (not gating: judged by --eval-dir accuracy): "
                      + "; ".join(failures))
        failures = []
    if failures and (departure := locate(fmt, request, path, inputs[:1], tolerance, notes)) is not None:
        result["departure"] = departure.as_dict()
        failures.append(departure.line())
    if (drop := accuracy_problem(result)) is not None:
        failures.append(drop)
    result["passed"] = not failures and not problems
    if failures or problems:
        notes.extend([*problems, *failures])
    return (PASSED if result["passed"] else FAILED), result


AARCH64_INPUTS = 2  # an emulated FAT-B0 inference takes 5-8 s on this host


def verify_on_aarch64(fmt: ExportFormat, request: ExportRequest, path: Path, tolerance: Tolerance,
                      calibrated_on: Sequence[str] = ()) -> tuple[bool, dict[str, Any]]:
    """The artifact run by the aarch64 build of its runtime under emulation (``--arm64``) on sample photos (held-out
    ones for quantized modes), compared with PyTorch under ``tolerance`` and with the x86 run of the same file."""
    adapter = fmt.backend.standalone_adapter
    assert fmt.runs_on_aarch64 and adapter is not None
    if request.precision in QUANTIZED:
        inputs, names = held_out_inputs(request.spec, request.img_size, list(calibrated_on))
    else:
        inputs, names = verification_inputs(request.spec, request.img_size)
    inputs, names = inputs[:AARCH64_INPUTS], names[:AARCH64_INPUTS]
    try:
        emulated = run_emulated(adapter, path, inputs)
    except EmulationError as error:
        return False, {"passed": False, "failure": str(error), "cpu_emulated": CPU_MODEL}
    comparison = compare(reference_logits(request.reference, inputs), emulated.outputs, tolerance)
    host = fmt.run(path, request, inputs, request.batch)
    return comparison.passed, {
        **emulated.describe(), "inputs": names, "comparison": comparison.as_dict(),
        "x86_vs_aarch64_max_abs_diff": float(np.abs(host - emulated.outputs).max()), "passed": comparison.passed}


def locate(fmt: ExportFormat, request: ExportRequest, path: Path, image: np.ndarray,
           tolerance: Tolerance, notes: list[str]) -> Departure | None:
    """The first block where a drifting file departs from PyTorch, where its runtime shows intermediate tensors (why
    it could not be found goes to ``notes``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # LiteRT: keeping every tensor "is for debugging": it is
            tensors = fmt.intermediate_tensors(path, request, image)
    except Exception as error:  # noqa: BLE001 - the comparison already failed; locating it is a bonus
        notes.append(f"the departing block could not be located: {' '.join(str(error).split())[:200]}")
        return None
    if tensors is None:
        return None
    reference = request.reference if request.model is request.reference else to_deploy(request.reference)
    return locate_departure(reference, image, tensors, tolerance.max_abs_rel)


def evaluate(request: ExportRequest, result: dict[str, Any], run: Callable[[np.ndarray], np.ndarray],
             measured_with: str) -> bool:
    """Accuracy of the reference and of ``run`` on the labeled set, into ``result["accuracy"]``; True when
    the artifact is quantized and so judged by its accuracy drop."""
    evaluation = request.evaluation
    if evaluation is None:
        return False
    eval_set = evaluation.eval_set
    reference = accuracy(reference_logits(request.reference, eval_set.inputs), eval_set.targets)
    measured = accuracy(run(eval_set.inputs), eval_set.targets)
    weak = judging_problem(len(eval_set.targets), len(eval_set.classes), reference["top1"])
    judged = request.precision in QUANTIZED and weak is None
    gating = "top-1 drop" if judged else (f"reported; logits gate kept: {weak}" if weak else "reported")
    result["accuracy"] = {
        **eval_set.describe(), "reference": reference, "artifact": measured, "measured_with": measured_with,
        "top1_drop_points": round(reference["top1"] - measured["top1"], 3),
        "max_top1_drop_points": evaluation.max_drop, "gating": gating,
    }
    return judged


def accuracy_problem(result: dict[str, Any]) -> str | None:
    """The failure line when the top-1 drop exceeds the allowed one (any precision), else None."""
    measured = result.get("accuracy")
    if measured and measured["top1_drop_points"] > measured["max_top1_drop_points"]:
        return (f"top-1 on {measured['folder']} drops {measured['top1_drop_points']:.1f} points "
                f"({measured['reference']['top1']:.1f} -> {measured['artifact']['top1']:.1f}%; "
                f"--max-accuracy-drop {measured['max_top1_drop_points']:g})")
    return None


def accuracy_summary(result: dict[str, Any]) -> dict[str, Any]:
    measured = result.get("accuracy")
    if not measured:
        return {}
    return {"top1": measured["artifact"]["top1"], "reference_top1": measured["reference"]["top1"],
            "top1_drop_points": measured["top1_drop_points"]}


def summarize(result: dict[str, Any]) -> dict[str, Any] | None:
    """The worst comparison (or the proxy that stood in for the runtime), for the summary table."""
    comparisons = result.get("comparisons") or {}
    if not comparisons:
        for key, source in (("simulation_proxy", "simulated"), ("fp16_proxy", "fp16 proxy")):
            if proxy := result.get(key):
                return {"source": source, **{k: proxy[k] for k in SUMMARY_KEYS}, **accuracy_summary(result)}
        return None
    worst = max(comparisons.values(), key=lambda c: c["max_abs_diff"])
    return {"source": str(result["runtime"]), **{k: worst[k] for k in SUMMARY_KEYS}, **accuracy_summary(result)}
