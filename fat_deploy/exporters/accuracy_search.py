"""Accuracy-aware quantization: keep the layers that hurt most in float until the top-1 drop is within the limit.

When a quantized export is judged by its top-1 drop on ``--eval-dir`` (a labeled set large and learned enough to
judge, see :func:`fat_deploy.common.evaluation.judging_problem`) and loses more than ``--max-accuracy-drop``, the
pipeline re-quantizes it with the worst 1, 2, 4, 8... layers of the ``--explain`` ranking (the noise each layer
adds, measured on held-out images) left in float (``--keep-float``), and keeps the first file that holds. Each step
is a complete export, verified and judged on the whole labeled set like the first; what every step kept, lost and
cost goes into the manifest. It is the per-layer fallback that NNCF's ``quantize_with_accuracy_control`` does for
OpenVINO (https://docs.openvino.ai/ - "Quantization with accuracy control"), applied to every runtime whose
quantizer can leave named layers float. ``--no-accuracy-search`` turns it off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# The most layers the search leaves float, as a share of the ranked (quantized) layers: past it the file is hardly
# an int8 file, and a user is better served by the fp32 one and the failure's explanation.
MOST_FLOAT_SHARE = 0.5
# Steps in a row that may fail to beat the best drop so far before the search gives up: the ranked layers are then
# not where the accuracy goes (each step is a whole export: minutes at 224 px).
PATIENCE = 2
METHOD = ("the worst 1, 2, 4... layers of the --explain ranking (noise each layer adds, held-out images) kept in "
          "float until the top-1 drop on --eval-dir is within --max-accuracy-drop; every step a complete export")


@dataclass(frozen=True)
class SearchStep:
    """One export of the search: how many ranked layers it kept float and what it measured."""

    kept_float: int
    passed: bool
    top1_drop_points: float | None
    speedup: float | None  # vs the float file, as the conversion measured it (1 thread)
    size_bytes: int | None
    seconds: float
    failure: str | None = None  # why it failed, when it was not the accuracy

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def step_sizes(ranked_layers: int, most_float_share: float = MOST_FLOAT_SHARE) -> list[int]:
    """1, 2, 4... layers, up to ``most_float_share`` of the ranked ones (the last step exactly that many)."""
    most = max(1, int(ranked_layers * most_float_share)) if ranked_layers else 0
    sizes, size = [], 1
    while size < most:
        sizes.append(size)
        size *= 2
    return [*sizes, most] if most else []


def search(ranking: Sequence[str], attempt: Callable[[list[str]], SearchStep], first_drop: float | None = None,
           most_float_share: float = MOST_FLOAT_SHARE) -> list[SearchStep]:
    """Run ``attempt`` with the worst k layers of ``ranking`` for each step size until one passes, one fails for
    another reason than accuracy (more float layers would not help), :data:`PATIENCE` steps in a row do not beat the
    best drop (``first_drop``: the fully quantized file's), or the steps run out; the steps run."""
    steps: list[SearchStep] = []
    best, stale = first_drop, 0
    for size in step_sizes(len(ranking), most_float_share):
        step = attempt(list(ranking[:size]))
        steps.append(step)
        if step.passed or step.failure is not None:
            break
        drop = step.top1_drop_points
        if drop is not None and (best is None or drop < best):
            best, stale = drop, 0
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    return steps


def summary_line(first: SearchStep, steps: Sequence[SearchStep], kept: Sequence[str]) -> str:
    """The fat-export summary's line on the search."""
    last = steps[-1]
    before = f"{first.top1_drop_points:.1f}" if first.top1_drop_points is not None else "?"
    after = f"{last.top1_drop_points:.1f}" if last.top1_drop_points is not None else "?"
    speeds = (f"; speed {first.speedup:.2f}x -> {last.speedup:.2f}x the float file"
              if first.speedup is not None and last.speedup is not None else "")
    shown = ", ".join(kept[:4]) + (f" (+{len(kept) - 4} more)" if len(kept) > 4 else "")
    outcome = (f"kept {last.kept_float} layer(s) float: {shown}" if last.passed
               else f"no step held ({len(steps)} tried, up to {last.kept_float} layer(s) float; keeping the layers "
                    "--explain ranks worst float does not recover it)")
    return f"accuracy search: {outcome}; top-1 drop {before} -> {after} points{speeds}"
