"""What an ONNX / ORT-format file holds, and what ORT Mobile's NNAPI and Core ML execution providers would take of it
(onnxruntime's own mobile usability checker, https://onnxruntime.ai/docs/tutorials/mobile/helpers/)."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from fat_deploy.contract.coverage import Accelerator, Coverage, sorted_counts

MOBILE_EPS = (("NNAPI", None), ("CoreML NeuralNetwork", "coreml_supported_neuralnetwork_ops.md"),
              ("CoreML MLProgram", "coreml_supported_mlprogram_ops.md"))
VERDICTS = {"YES": "takes it whole or nearly", "MAYBE": "partly", "NO": "poorly"}
SOURCE_EPS = "source_onnx_eps"  # key of a fat-export .ort manifest: the EPs' shares of the ONNX graph it came from
ORT_FORMAT_EPS_UNCHECKED = ("onnxruntime's usability checker reads ONNX files only; a fat-export .ort manifest holds "
                            f"the check of the ONNX graph it was converted from ({SOURCE_EPS})")


def op_histogram(model: Any) -> dict[str, int]:
    return sorted_counts(Counter(node.op_type for node in model.graph.node))


def mobile_accelerators(path: Path) -> list[Accelerator]:
    """NNAPI and the two Core ML EPs on the model optimised at the BASIC level, as ORT Mobile loads it: ops taken,
    partitions (each a hand-over between the accelerator and the CPU), op types left out and their counts."""
    from onnxruntime.tools.mobile_helpers import usability_checker as checker
    from onnxruntime.tools.onnx_model_utils import optimize_model

    with tempfile.TemporaryDirectory() as folder:
        optimized = Path(folder) / "basic.onnx"
        optimize_model(path, optimized, use_external_initializers=True)
        model = checker.ModelProtoWithShapeInfo(optimized).model_with_shape_info
        counts = op_histogram(model)
        found = []
        for name, ops_table in MOBILE_EPS:
            info = (checker.check_nnapi_partitions(model, True) if ops_table is None
                    else checker.check_coreml_partitions(model, True, ops_table))
            left = {op.split(":")[-1] for op in info.unsupported_ops}
            found.append(Accelerator(
                name=name, takes=info.num_supported_nodes, total=info.num_nodes, partitions=info.num_partitions,
                outside=sorted_counts({op: counts.get(op, 0) for op in left}),
                verdict=VERDICTS.get(info.suitability().name, info.suitability().name)))
    return found


def onnx_coverage(path: Path) -> Coverage:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    ops = op_histogram(model)
    return Coverage(format="onnx", ops=ops, layout_transposes=ops.get("Transpose", 0),
                    accelerators=mobile_accelerators(path))


def ort_format_coverage(path: Path) -> Coverage:
    """Ops of an ORT-format file, read from its flatbuffer (the main graph; the EPs are checked on ONNX only)."""
    from onnxruntime.tools.ort_format_model.ort_flatbuffers_py.fbs.InferenceSession import InferenceSession

    session = InferenceSession.GetRootAsInferenceSession(path.read_bytes(), 0)
    graph = session.Model().Graph()
    ops = sorted_counts(dict(Counter(graph.Nodes(i).OpType().decode() for i in range(graph.NodesLength()))))
    unchecked = [Accelerator(name=name, checked=False, verdict=ORT_FORMAT_EPS_UNCHECKED) for name, _ in MOBILE_EPS]
    return Coverage(format="ort", ops=ops, layout_transposes=ops.get("Transpose", 0),
                    accelerators=unchecked)
