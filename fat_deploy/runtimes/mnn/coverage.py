"""What an ``.mnn`` file holds: ops by type (read with MNN's expression API), its layout conversions, and the
accelerator paths: MNN's CPU backend runs every op it loads; its GPU backends are not on this host."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fat_deploy.contract.coverage import Accelerator, Coverage
from fat_deploy.environment import native_stdout_to_stderr

BOOKKEEPING = {"Input", "Const"}
LAYOUT_OPS = ("ConvertTensor", "Permute")  # NC4HW4 <-> NCHW conversions, and transposes


def mnn_coverage(path: Path) -> Coverage:
    with native_stdout_to_stderr():
        import MNN

        variables = MNN.expr.load_as_list(str(path))
    counts = dict(Counter(v.op_type for v in variables if v.op_type not in BOOKKEEPING).most_common())
    if not counts:
        raise ValueError("no operators in the file")
    return Coverage(
        format="mnn", ops=counts, layout_transposes=sum(counts.get(op, 0) for op in LAYOUT_OPS),
        accelerators=[
            Accelerator(name="MNN CPU", takes=sum(counts.values()), total=sum(counts.values()), partitions=1,
                        verdict="MNN's CPU backend has a kernel for every op it loads"),
            Accelerator(name="MNN OpenCL / Vulkan / Metal", checked=False,
                        verdict="GPU backends choose per op on the device; no phone GPU here"),
        ],
        notes=[f"layout conversions counted: {', '.join(LAYOUT_OPS)} (MNN's CPU kernels work in NC4HW4)"])
