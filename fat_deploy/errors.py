"""Errors a user can act on. The CLIs print them as one line and exit non-zero."""

from __future__ import annotations


class FatDeployError(Exception):
    """Base class: anything the user can fix (bad name, bad file, bad option)."""

    exit_code = 2


class UnknownModelError(FatDeployError, KeyError):
    """A model name that is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(FatDeployError):
    """A checkpoint that is missing, unreadable, unsafe or does not fit the model."""


class InputSizeError(FatDeployError, ValueError):
    """An input resolution the model cannot take."""


class ArgumentError(FatDeployError, ValueError):
    """A Python API argument of the wrong type or out of range (the CLIs' flags get the same checks)."""
