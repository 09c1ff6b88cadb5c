"""Coverage report of an artifact: what the file holds and what each accelerator path would take of it.

Read from the file itself by its format's ``coverage()`` (``fat-inspect FILE``), and stored in every manifest at
export. The accelerator verdicts come from the runtimes' own tools where one exists on this OS (onnxruntime's
mobile usability checker, LiteRT's interpreter with the XNNPACK delegate, the ExecuTorch program's delegate
calls); where no tool can tell here, the entry says so instead of guessing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Accelerator:
    """One accelerator path (a delegate or execution provider) and what it takes of the graph."""

    name: str
    takes: int | None = None  # ops it runs
    total: int | None = None  # ops in the graph it was offered
    partitions: int | None = None  # graph pieces it runs (each boundary is a hand-over to the CPU fallback)
    outside: dict[str, int] = field(default_factory=dict)  # op type -> count it leaves to the fallback kernels
    verdict: str = ""  # the tool's own words, or why it could not be checked here
    checked: bool = True

    def line(self) -> str:
        """``XNNPACK 932/932 ops, 1 partition`` / ``NNAPI 352/390 ops, 39 partitions (outside: Gelu x12)``."""
        if not self.checked:
            return f"{self.name}: not checked here ({self.verdict})"
        counts = f"{self.takes}/{self.total} ops" if self.takes is not None else ""
        pieces = f"{self.partitions} partition{'s' if self.partitions != 1 else ''}" if self.partitions is not None else ""
        text = f"{self.name} " + ", ".join(part for part in (counts, pieces) if part)
        if self.outside:
            text += " (outside: " + ", ".join(f"{op} x{n}" for op, n in self.outside.items()) + ")"
        return text

    @property
    def whole(self) -> bool:
        return self.checked and not self.outside and self.partitions == 1 and self.takes == self.total


@dataclass
class Coverage:
    """Ops of one artifact by type, its layout transposes, and each accelerator path's share."""

    format: str
    ops: dict[str, int]  # op type -> count, most frequent first
    layout_transposes: int | None  # transpose ops in the file (None: not visible, e.g. inside a delegate blob)
    accelerators: list[Accelerator] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def op_count(self) -> int:
        return sum(self.ops.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        """One line for the fat-export summary (:func:`accelerators_line`)."""
        return accelerators_line(self.accelerators)


def accelerators_line(accelerators: list[Accelerator]) -> str:
    """Each checked accelerator's :meth:`Accelerator.line`, ``NAME whole`` when it takes everything."""
    return "; ".join(f"{a.name} whole" if a.whole else a.line() for a in accelerators if a.checked)


def sorted_counts(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))
