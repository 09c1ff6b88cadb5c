"""What one runtime package declares: its session backend, its export format (if it has one), its packages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fat_deploy.exporters.registry import ExportFormat
    from fat_deploy.runtimes.session import Backend


@dataclass(frozen=True)
class Runtime:
    """One runtime: loads and runs artifacts (``backend``), and, unless it runs PyTorch itself, makes them."""

    backend: Backend
    export_format: ExportFormat | None = None
    # Distributions whose versions every manifest and measurement records (what produced and ran the artifact).
    packages: tuple[str, ...] = ()


def option(flag: str, help: str, *, default: Any = None, choices: tuple[str, ...] | None = None,  # noqa: A002
           metavar: str | None = None) -> Any:
    """A field of a runtime's options dataclass; ``fat-export`` makes its command-line flag from it.

    The field's type says the flag's kind: ``bool`` a switch, ``list[str]`` one or more values, else one value.
    """
    return field(default=default, metadata={"flag": flag, "help": help, "choices": choices, "metavar": metavar})
