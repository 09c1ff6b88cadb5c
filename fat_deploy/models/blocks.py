"""The blocks a report names: what "the first block that departs" and per-block float16 margins refer to."""

from __future__ import annotations

import torch.nn as nn


def block_names(model: nn.Module) -> dict[str, nn.Module]:
    """The modules reported as blocks: the model's direct children (stem, final norm, head), the members of its
    ``nn.ModuleList``/``nn.Sequential`` children (stages), and, inside a block, the members of its ``nn.ModuleList``
    children (a stage's FAT blocks), recursively. The ops of a nested block count for the innermost one."""
    blocks: dict[str, nn.Module] = {}

    def members_of_lists(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.ModuleList):
                for index, member in child.named_children():
                    blocks[f"{prefix}{name}.{index}"] = member
                    members_of_lists(member, f"{prefix}{name}.{index}.")

    for name, child in model.named_children():
        if isinstance(child, (nn.ModuleList, nn.Sequential)):
            for index, member in child.named_children():
                blocks[f"{name}.{index}"] = member
                members_of_lists(member, f"{name}.{index}.")
        else:
            blocks[name] = child
            members_of_lists(child, f"{name}.")
    return blocks
