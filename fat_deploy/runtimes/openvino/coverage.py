"""What an OpenVINO IR holds: ops by type (constants, parameters and results left out), and what the CPU plugin
takes of it (``Core.query_model``: the ops it has kernels for); GPU and NPU plugins are not on this host."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fat_deploy.contract.coverage import Accelerator, Coverage
from fat_deploy.runtimes.openvino.session import openvino_reason
from fat_deploy.runtimes.openvino.standalone import MODEL_XML, openvino_module

BOOKKEEPING = {"Constant", "Parameter", "Result"}
# Ops a converter leaves when a shape is computed at run time: a static IR should have none.
SHAPE_OPS = {"ShapeOf", "Gather", "Greater", "Mod", "Select", "Range", "Broadcast"}


def openvino_coverage(path: Path) -> Coverage:
    core = openvino_module().Core()
    try:
        model = core.read_model(str(path / MODEL_XML))
    except Exception as error:  # noqa: BLE001 - reported by fat-inspect as "not readable", in one line
        raise ValueError(openvino_reason(error)) from None
    ops = [op for op in model.get_ordered_ops() if op.get_type_name() not in BOOKKEEPING]
    counts = dict(Counter(op.get_type_name() for op in ops).most_common())
    supported = core.query_model(model, "CPU")
    outside = Counter(op.get_type_name() for op in ops if op.get_friendly_name() not in supported)
    notes = []
    if shape_ops := {op: n for op, n in counts.items() if op in SHAPE_OPS}:
        notes.append("shape arithmetic in the file (the CPU plugin folds it when it compiles the static-shape model; "
                     "it is not run per image): " + ", ".join(f"{op} x{n}" for op, n in shape_ops.items()))
    return Coverage(
        format="openvino", ops=counts, layout_transposes=counts.get("Transpose", 0),
        accelerators=[
            Accelerator(name="OpenVINO CPU", takes=len(ops) - sum(outside.values()), total=len(ops),
                        outside=dict(outside), verdict="Core.query_model on the CPU plugin"),
            Accelerator(name="OpenVINO GPU / NPU", checked=False,
                        verdict="no Intel GPU or NPU on this host (their plugins decide at compile time)"),
        ],
        notes=notes)
