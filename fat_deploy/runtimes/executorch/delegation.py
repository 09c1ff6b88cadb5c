"""What the XNNPACK partitioner took: delegated vs portable (reference-kernel) ops, by op type."""

from __future__ import annotations

import re
from typing import Any

# Not computation: tuple access to a multi-output op's results.
BOOKKEEPING_OPS = frozenset({"getitem"})


def op_type(node_name: str) -> str:
    """``aten_native_layer_norm_default_3`` -> ``native_layer_norm`` (the edge op, without overload or index)."""
    name = re.sub(r"_\d+$", "", node_name)
    name = re.sub(r"^aten_", "", name)
    return re.sub(r"_(default|Tensor|Scalar|int|dim|self|out)$", "", name)


def delegation_report(graph_module: Any) -> dict[str, Any]:
    """Delegated and portable op counts of a lowered edge program (ExecuTorch's own ``get_delegation_info``)."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(graph_module)
    by_op: dict[str, dict[str, int]] = {}
    for name, breakdown in info.delegation_by_operator.items():
        kind = op_type(name)
        if kind in BOOKKEEPING_OPS:
            continue
        entry = by_op.setdefault(kind, {"delegated": 0, "portable": 0})
        entry["delegated"] += breakdown.delegated
        entry["portable"] += breakdown.non_delegated
    portable = {op: counts["portable"] for op, counts in by_op.items() if counts["portable"]}
    return {
        "backend": "XnnpackBackend",
        "delegated_subgraphs": info.num_delegated_subgraphs,
        "delegated_ops": sum(counts["delegated"] for counts in by_op.values()),
        "portable_ops": sum(portable.values()),
        "portable_by_op": dict(sorted(portable.items(), key=lambda item: -item[1])),
        "by_op": dict(sorted(by_op.items())),
    }


def delegation_line(report: dict[str, Any]) -> str:
    """One line for the summary: ``XNNPACK: 1212 ops in 63 subgraphs; portable: native_layer_norm x26, ...``."""
    line = f"XNNPACK: {report['delegated_ops']} ops in {report['delegated_subgraphs']} subgraphs"
    if not report["portable_by_op"]:
        return line + "; every compute op delegated"
    return line + "; portable kernels: " + ", ".join(f"{op} x{n}" for op, n in report["portable_by_op"].items())
