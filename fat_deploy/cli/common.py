"""What every console script shares: user errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from fat_deploy.errors import FatDeployError

EXIT_NOT_IMPLEMENTED = 3


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, prog: str) -> int:
    """Run ``main``; a :class:`FatDeployError` prints ``prog: error: ...`` and returns its exit code."""
    try:
        return main(argv)
    except FatDeployError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
