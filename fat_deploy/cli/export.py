"""`fat-export` console script (argument parsing only)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from fat_deploy.cli.common import EXIT_NOT_IMPLEMENTED, run_cli


def _main(argv: Sequence[str] | None) -> int:
    print("fat-export: not implemented yet", file=sys.stderr)
    return EXIT_NOT_IMPLEMENTED


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv, "fat-export")


if __name__ == "__main__":
    sys.exit(main())
