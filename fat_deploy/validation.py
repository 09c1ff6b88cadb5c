"""Argument checks at the public boundary: wrong types and ranges become one-line project errors."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fat_deploy.errors import ArgumentError


def _kind(value: Any) -> str:
    return type(value).__name__


def require_str(name: str, value: Any, *, optional: bool = False) -> str | None:
    """``value`` if it is a string (or None when optional)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ArgumentError(f"{name} must be a string, got {_kind(value)} {value!r}")
    return value


def require_int(name: str, value: Any, *, minimum: int | None = None, optional: bool = False) -> int | None:
    """``value`` if it is an int (bool excluded) of at least ``minimum``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(f"{name} must be an integer, got {_kind(value)} {value!r}")
    if minimum is not None and value < minimum:
        raise ArgumentError(f"{name} must be at least {minimum}, got {value}")
    return value


def require_number(name: str, value: Any, *, minimum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentError(f"{name} must be a number, got {_kind(value)} {value!r}")
    if minimum is not None and value < minimum:
        raise ArgumentError(f"{name} must be at least {minimum}, got {value}")
    return float(value)


def require_path(name: str, value: Any, *, optional: bool = False) -> Path | None:
    """A filesystem path given as ``str`` or ``os.PathLike``."""
    if value is None and optional:
        return None
    if not isinstance(value, (str, os.PathLike)) or (isinstance(value, str) and not value):
        raise ArgumentError(f"{name} must be a path (str or pathlib.Path), got {_kind(value)} {value!r}")
    return Path(value)


def require_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(f"{name} must be True or False, got {_kind(value)} {value!r}")
    return value


def require_img_size(value: Any) -> int | tuple[int, ...] | None:
    """None, N, or a sequence of one or two ints (checked against the model later)."""
    if value is None:
        return None
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return tuple(require_int("img_size", v, minimum=1) for v in value)  # type: ignore[misc]
    return require_int("img_size", value, minimum=1)


def require_str_list(name: str, value: Any, *, optional: bool = True) -> list[str] | None:
    if value is None and optional:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise ArgumentError(f"{name} must be a list of strings, got {_kind(value)} {value!r}")
    return list(value)
