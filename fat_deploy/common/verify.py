"""Artifact vs PyTorch: the metrics, and the tolerances each precision must meet (one place)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from fat_deploy.precision import Precision


@dataclass(frozen=True)
class Tolerance:
    """Limits an artifact's logits must meet against the fp32 PyTorch model."""

    max_abs_rel: float  # max |artifact - torch| divided by max |torch|
    min_cosine: float  # worst per-input cosine similarity of the logits
    min_top1_agreement: float  # fraction of inputs with a clear float top-1 (see CLEAR_MARGIN) whose top-1 matches

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


# Per precision. fp32 artifacts must reproduce PyTorch to float rounding; fp16 within half precision.
TOLERANCES: dict[Precision, Tolerance] = {
    Precision.FP32: Tolerance(max_abs_rel=1e-4, min_cosine=0.99999, min_top1_agreement=1.0),
    Precision.FP16: Tolerance(max_abs_rel=2e-2, min_cosine=0.999, min_top1_agreement=0.75),
    # Quantized artifacts: the cost is measured and printed; only a collapse fails the export.
    Precision.INT8_DYNAMIC: Tolerance(max_abs_rel=1.0, min_cosine=0.95, min_top1_agreement=0.5),
    Precision.INT8_WEIGHTS: Tolerance(max_abs_rel=1.0, min_cosine=0.95, min_top1_agreement=0.5),
    Precision.INT8_STATIC: Tolerance(max_abs_rel=1.0, min_cosine=0.95, min_top1_agreement=0.5),
    Precision.W8A8: Tolerance(max_abs_rel=1.0, min_cosine=0.95, min_top1_agreement=0.5),
    Precision.PALETTIZE_4: Tolerance(max_abs_rel=1.0, min_cosine=0.95, min_top1_agreement=0.5),
    Precision.PALETTIZE_6: Tolerance(max_abs_rel=1.0, min_cosine=0.95, min_top1_agreement=0.5),
    Precision.PALETTIZE_8: Tolerance(max_abs_rel=1.0, min_cosine=0.95, min_top1_agreement=0.5),
    Precision.INT4_BLOCK: Tolerance(max_abs_rel=1.0, min_cosine=0.95, min_top1_agreement=0.5),
}


# A float top-1 is "clear" when its lead over the runner-up is at least this fraction of the input's logit range.
# Random-weight models have near-tied logits, so their top-1 flips under any noise and top-1 agreement over all
# inputs measures the tie, not the artifact; the gate judges top-1 on clear inputs only (all inputs are reported).
PROBABILITY_FLOOR = 1e-30  # floor of probability outputs before their log (artifacts that output probabilities)
CLEAR_MARGIN = 0.05


@dataclass
class Comparison:
    """How an artifact's logits compare with PyTorch's on the same inputs."""

    inputs: int
    max_abs_diff: float
    max_abs_rel: float
    cosine_min: float
    cosine_mean: float
    top1_agreement: float  # over all inputs (reported)
    top1_agreement_clear: float | None  # over inputs with a clear float top-1 (gated); None when there are none
    clear_inputs: int
    top5_overlap: float
    sqnr_db: float
    finite: bool
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "passed": self.passed}


def _topk(logits: np.ndarray, k: int) -> np.ndarray:
    k = min(k, logits.shape[1])
    return np.argsort(-logits, axis=1)[:, :k]


def _sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of the logits, in dB (inf when identical)."""
    noise = float(np.sum((reference - candidate) ** 2))
    signal = float(np.sum(reference**2))
    return float("inf") if noise == 0 else 10.0 * float(np.log10(max(signal, 1e-30) / noise))


def compare(reference: np.ndarray, candidate: np.ndarray, tolerance: Tolerance | None) -> Comparison:
    """Metrics of ``candidate`` against ``reference`` (both (N, classes)), checked if a tolerance is given."""
    reference = np.asarray(reference, np.float64).reshape(len(reference), -1)
    candidate = np.asarray(candidate, np.float64).reshape(len(candidate), -1)
    if reference.shape != candidate.shape:
        raise ValueError(f"output shape {candidate.shape} differs from PyTorch's {reference.shape}")
    finite = bool(np.isfinite(candidate).all())
    if not finite:
        candidate = np.nan_to_num(candidate, nan=0.0, posinf=0.0, neginf=0.0)
    diff = np.abs(reference - candidate)
    scale = float(np.abs(reference).max()) or 1.0
    norms = np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1)
    cosine = np.where(norms > 0, (reference * candidate).sum(axis=1) / np.maximum(norms, 1e-30), 0.0)
    top5_ref, top5_cand = _topk(reference, 5), _topk(candidate, 5)
    overlap = np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(top5_ref, top5_cand)])
    same_top1 = top5_ref[:, 0] == top5_cand[:, 0]
    ordered = np.sort(reference, axis=1)
    spread = ordered[:, -1] - ordered[:, 0]
    clear = (ordered[:, -1] - ordered[:, -2]) >= CLEAR_MARGIN * np.maximum(spread, 1e-30) if reference.shape[1] > 1 \
        else np.ones(len(reference), bool)
    result = Comparison(
        inputs=len(reference),
        max_abs_diff=float(diff.max()) if finite else float("inf"),
        max_abs_rel=float(diff.max() / scale) if finite else float("inf"),
        cosine_min=float(cosine.min()) if finite else 0.0,
        cosine_mean=float(cosine.mean()) if finite else 0.0,
        top1_agreement=float(np.mean(same_top1)),
        top1_agreement_clear=float(np.mean(same_top1[clear])) if clear.any() else None,
        clear_inputs=int(clear.sum()),
        top5_overlap=float(overlap),
        sqnr_db=_sqnr_db(reference, candidate),
        finite=finite,
    )
    if tolerance is not None:
        if not finite:
            result.failures.append("non-finite outputs (overflow?)")
        if result.max_abs_rel > tolerance.max_abs_rel:
            result.failures.append(
                f"max relative diff {result.max_abs_rel:.2e} > {tolerance.max_abs_rel:.0e}"
            )
        if result.cosine_min < tolerance.min_cosine:
            result.failures.append(f"cosine {result.cosine_min:.6f} < {tolerance.min_cosine}")
        clear_agreement = result.top1_agreement_clear
        if clear_agreement is not None and clear_agreement < tolerance.min_top1_agreement:
            result.failures.append(
                f"top-1 agreement {clear_agreement:.2f} on the {result.clear_inputs} inputs with a clear float top-1 "
                f"< {tolerance.min_top1_agreement}"
            )
    return result


def is_tie(score: float, other: float, error: float) -> bool:
    """Two classes may swap ranks only if their reference scores differ by less than twice the largest score
    difference measured on that image: the swap is then within the measured numerical error."""
    return abs(score - other) <= 2 * error + 1e-12
