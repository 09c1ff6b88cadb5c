"""What LiteRT's XNNPACK delegate takes of a .tflite file, read from the interpreter after it applied the delegate.

The LiteRT interpreter applies XNNPACK by default and replaces each run of ops it takes with one DELEGATE node.
The ops left outside are found from the graph: a tensor a DELEGATE node reads (or a model output it does not
write) that no constant, model input or delegate output provides is made by an op that runs on LiteRT's own
kernels; so are the producers of that op's inputs, recursively.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from fat_deploy.contract.coverage import Accelerator, Coverage, sorted_counts

DELEGATE_OP = "DELEGATE"
GPU_UNCHECKED = ("no GPU driver here (LiteRT's WebGPU accelerator finds no adapter); the wheel's model analyzer "
                 "calls any model GPU-compatible (it passed STABLEHLO_SORT), so its verdict is not quoted")


def xnnpack_coverage(ops: list[dict[str, Any]], model_inputs: list[int], model_outputs: list[int]) -> Accelerator:
    """XNNPACK's share of a graph given the interpreter's op details (original ops, then DELEGATE nodes)."""
    delegates = [op for op in ops if op["op_name"] == DELEGATE_OP]
    originals = [op for op in ops if op["op_name"] != DELEGATE_OP]
    producer = {int(t): op["index"] for op in originals for t in op["outputs"]}
    by_index = {op["index"]: op for op in originals}
    delegated_outputs = {int(t) for op in delegates for t in op["outputs"]}
    provided = delegated_outputs | {int(t) for t in model_inputs}
    frontier = [int(t) for op in delegates for t in op["inputs"]] + [int(t) for t in model_outputs]
    outside: set[int] = set()
    while frontier:
        tensor = frontier.pop()
        if tensor < 0 or tensor in provided or tensor not in producer or producer[tensor] in outside:
            continue  # optional input, delegate output, model input, or constant (no producer)
        index = producer[tensor]
        outside.add(index)
        frontier.extend(int(t) for t in by_index[index]["inputs"])
    left = Counter(by_index[i]["op_name"] for i in outside)
    return Accelerator(name="XNNPACK", takes=len(originals) - len(outside), total=len(originals),
                       partitions=len(delegates), outside=sorted_counts(dict(left)),
                       verdict="LiteRT interpreter, XNNPACK delegate applied as at run time")


def tflite_coverage(path: Path) -> Coverage:
    """Op histogram, TRANSPOSE count, XNNPACK's share; the GPU delegate marked as not checkable here."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(path), num_threads=1)
    interpreter.allocate_tensors()
    details = interpreter._get_ops_details()
    ops = sorted_counts(dict(Counter(op["op_name"] for op in details if op["op_name"] != DELEGATE_OP)))
    xnnpack = xnnpack_coverage(details, [d["index"] for d in interpreter.get_input_details()],
                               [d["index"] for d in interpreter.get_output_details()])
    gpu = Accelerator(name="GPU delegate", checked=False, verdict=GPU_UNCHECKED)
    return Coverage(format="tflite", ops=ops, layout_transposes=ops.get("TRANSPOSE", 0),
                    accelerators=[xnnpack, gpu])
