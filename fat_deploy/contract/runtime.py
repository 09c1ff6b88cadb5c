"""What one runtime package declares: its session backend, its export format (if it has one), its packages."""

from __future__ import annotations

from dataclasses import dataclass

from fat_deploy.contract.formats import ExportFormat
from fat_deploy.contract.session import Backend


@dataclass(frozen=True)
class Runtime:
    """One runtime: loads and runs artifacts (``backend``), and, unless it runs PyTorch itself, makes them."""

    backend: Backend
    export_format: ExportFormat | None = None
    # Distributions whose versions every manifest and measurement records (what produced and ran the artifact).
    packages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.export_format is not None and self.export_format.backend is not self.backend:
            raise TypeError(f"{self.export_format.name}: the format's backend and the runtime's differ")
