"""What every console script shares: user errors become one line on stderr and a non-zero exit."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TextIO

from fat_deploy.environment import native_output_captured
from fat_deploy.errors import FatDeployError

EXIT_NOT_IMPLEMENTED = 3


@dataclass(frozen=True)
class Terminal:
    """The user's stdout and stderr, opened before converters' output is silenced (see ``quiet``)."""

    out: TextIO
    err: TextIO


def _own_stream(stream: TextIO) -> TextIO:
    try:
        return os.fdopen(os.dup(stream.fileno()), "w", buffering=1, encoding="utf-8")
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return stream  # no real file descriptor (e.g. captured by a test runner): silencing cannot reach it


_terminal: list[Terminal] = []


def terminal() -> Terminal:
    """Where the CLI's own progress, summary and JSON go."""
    return _terminal[-1] if _terminal else Terminal(sys.stdout, sys.stderr)


@contextlib.contextmanager
def quiet(verbose: bool) -> Iterator[None]:
    """Without ``--verbose``, libraries' and converters' own output is discarded meanwhile."""
    if verbose:
        yield
        return

    library_loggers = [logging.getLogger(name) for name in ("coremltools", "absl", "torch", "onnxscript", "jax", "nncf")]
    levels = [logger.level for logger in library_loggers]
    for logger in library_loggers:
        logger.setLevel(logging.ERROR)
    try:
        with native_output_captured():
            yield
    finally:
        for logger, level in zip(library_loggers, levels):
            logger.setLevel(level)


class _TerminalWarnings(logging.Handler):
    """fat-deploy's own warnings as ``prog: warning: ...`` on stderr, each message once per run."""

    def __init__(self, prog: str) -> None:
        super().__init__(logging.WARNING)
        self.prog = prog
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message not in self.seen:
            self.seen.add(message)
            print(f"{self.prog}: warning: {message}", file=terminal().err)


def run_cli(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None, prog: str) -> int:
    """Run ``main``; a :class:`FatDeployError` prints ``prog: error: ...`` and returns its exit code."""
    logger = logging.getLogger("fat_deploy")
    handler = _TerminalWarnings(prog)
    logger.addHandler(handler)
    logger.propagate = False
    _terminal.append(Terminal(_own_stream(sys.stdout), _own_stream(sys.stderr)))
    try:
        return main(argv)
    except FatDeployError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        opened = _terminal.pop()
        for stream, original in ((opened.out, sys.stdout), (opened.err, sys.stderr)):
            stream.flush()
            if stream is not original:
                stream.close()
