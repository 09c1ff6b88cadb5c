"""What a .pte program runs in delegates and what on ExecuTorch's portable kernels, read from the program itself."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fat_deploy.contract.coverage import Accelerator, Coverage, sorted_counts

BACKEND_NAMES = {"XnnpackBackend": "XNNPACK"}
DELEGATE_PAYLOAD_NOTE = ("ops inside a delegate are compiled into its payload and not listed in the program; the "
                         "export manifest's 'delegation' counts them by op type")


def pte_coverage(path: Path) -> Coverage:
    """Delegate calls by backend and portable kernel calls by operator, over every execution plan's instructions."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    loaded = deserialize_pte_binary(path.read_bytes())
    program = getattr(loaded, "program", loaded)
    calls: Counter[str] = Counter()
    portable: Counter[str] = Counter()
    for plan in program.execution_plan:
        for chain in plan.chains:
            for instruction in chain.instructions:
                args = instruction.instr_args
                kind = type(args).__name__
                if kind == "DelegateCall":
                    calls[plan.delegates[args.delegate_index].id] += 1
                elif kind == "KernelCall":
                    operator = plan.operators[args.op_index]
                    portable[operator.name + (f".{operator.overload}" if operator.overload else "")] += 1
    ops = sorted_counts({f"delegate:{backend}": n for backend, n in calls.items()} | dict(portable))
    accelerators = [Accelerator(name=BACKEND_NAMES.get(backend, backend), partitions=n,
                                outside=sorted_counts(dict(portable)),
                                verdict="delegate calls in the program")
                    for backend, n in calls.items()]
    transposes = sum(n for op, n in portable.items() if "permute" in op or "transpose" in op)
    return Coverage(format="executorch", ops=ops, layout_transposes=transposes if not calls else None,
                    accelerators=accelerators, notes=[DELEGATE_PAYLOAD_NOTE] if calls else [])
