"""What an ncnn model holds: layers by type, read from its param file, and the accelerator paths: ncnn's CPU runs
every layer it loads; its Vulkan path is not on this host."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fat_deploy.contract.coverage import Accelerator, Coverage
from fat_deploy.runtimes.ncnn.standalone import PARAM

MAGIC = "7767517"
BOOKKEEPING = {"Input", "MemoryData", "Split"}  # the input, constants, and blob fan-out (no arithmetic)


def ncnn_coverage(path: Path) -> Coverage:
    lines = (path / PARAM).read_text(encoding="utf-8").splitlines()
    if not lines or lines[0].strip() != MAGIC:
        raise ValueError(f"{PARAM} is not an ncnn param file (no magic number {MAGIC})")
    counts = dict(Counter(line.split()[0] for line in lines[2:] if line.split()
                          and line.split()[0] not in BOOKKEEPING).most_common())
    if not counts:
        raise ValueError("no layers in the file")
    return Coverage(
        format="ncnn", ops=counts, layout_transposes=counts.get("Permute", 0),
        accelerators=[
            Accelerator(name="ncnn CPU", takes=sum(counts.values()), total=sum(counts.values()), partitions=1,
                        verdict="ncnn's CPU has a kernel for every layer it loads"),
            Accelerator(name="ncnn Vulkan", checked=False, verdict="no Vulkan driver or GPU on this host"),
        ],
        notes=[f"not counted: {', '.join(sorted(BOOKKEEPING))} (input, constants, blob fan-out)"])
