"""Export options: each format's typed ``Options`` dataclass plus the shared quantization options.

The checks here know no format by name: which options exist, their flags, kinds and choices come from the
dataclasses the runtime packages declare (``fat-export`` makes its flags from the same fields).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from fat_deploy.contract.formats import (
    CALIBRATED,
    PRECISIONS,
    ExportFormat,
    Precision,
    QuantizationOptions,
    UnsupportedOptionError,
    flag_of,
    option_fields,
)
from fat_deploy.registry import formats
from fat_deploy.validation import require_bool, require_int, require_str, require_str_list

QUANTIZATION_OPTIONS = tuple(f.name for f in option_fields(QuantizationOptions))


def option_kind(option: dataclasses.Field[Any]) -> str:
    """``switch`` (bool), ``list`` (list of strings), ``int`` or ``str``, from the field's annotation."""
    annotation = option.type if isinstance(option.type, str) else getattr(option.type, "__name__", str(option.type))
    if annotation.startswith("bool"):
        return "switch"
    if annotation.startswith("list"):
        return "list"
    return "int" if annotation.startswith("int") else "str"


def all_option_fields() -> dict[str, dataclasses.Field[Any]]:
    """Every option any registered format declares, plus the quantization options, by name (first wins)."""
    found: dict[str, dataclasses.Field[Any]] = {f.name: f for f in option_fields(QuantizationOptions)}
    for fmt in formats().values():
        for f in option_fields(fmt.Options):
            found.setdefault(f.name, f)
    return found


def is_set(value: Any) -> bool:
    """An option counts as given unless it is None, False or an empty list (0 is a value: it gets checked)."""
    return value is not None and value is not False and value != []


def _check_value(option: dataclasses.Field[Any], value: Any) -> None:
    """Type (named as the Python API names it: only API callers can pass a wrong type) and value (named by its
    flag: both CLI and API users can pass a wrong one) of one option."""
    name, flag, kind = option.name, str(option.metadata["flag"]), option_kind(option)
    if kind == "switch":
        require_bool(name, value)
    elif kind == "list":
        require_str_list(name, value)
    elif kind == "int":
        require_int(name, value, optional=True)
        require_int(flag, value, minimum=1, optional=True)
    else:
        require_str(name, value, optional=True)
    choices = option.metadata.get("choices")
    if choices and value is not None and value not in choices:
        raise UnsupportedOptionError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")


def check_request_options(fmt: ExportFormat, precision: str, options: dict[str, Any]) -> Precision:
    """Reject unknown precisions, unknown options and options the format or precision cannot have, before any work;
    the precision, as a :class:`Precision`."""
    if precision not in PRECISIONS:
        raise UnsupportedOptionError(f"unknown precision {precision!r}: known are {', '.join(PRECISIONS)}")
    mode = Precision(precision)
    if precision not in fmt.precisions:
        raise UnsupportedOptionError(
            f"{fmt.name} does not support precision {precision}: it supports {', '.join(fmt.precisions)}"
        )
    known = all_option_fields()
    for name, value in options.items():
        if name not in known:
            raise UnsupportedOptionError(f"unknown option {name!r}: known are {', '.join(sorted(known))}")
        _check_value(known[name], value)
    chosen = {name: value for name, value in options.items() if is_set(value)}
    for name in chosen:
        flag = flag_of(fmt.Options, name)
        if name in QUANTIZATION_OPTIONS:
            if precision not in CALIBRATED:
                raise UnsupportedOptionError(
                    f"{flag} applies to calibrated modes ({', '.join(CALIBRATED)}) only, not {precision}")
        elif name not in fmt.supported_options:
            raise UnsupportedOptionError(f"{str(known[name].metadata['flag'])} is not supported for {fmt.name}")
    method = chosen.get("calibration_method")
    if method and method not in fmt.calibration_methods:
        raise UnsupportedOptionError(f"--calibration-method {method} is not available for {fmt.name}: it has "
                                     f"{', '.join(fmt.calibration_methods)}")
    fmt.check_options(mode, chosen)
    if reason := fmt.unavailable_reason():
        raise UnsupportedOptionError(reason)
    return mode


def options_for(fmt: ExportFormat, given: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``given`` that ``fmt`` (or quantization) declares: what ``--format all`` passes each format."""
    return {name: value for name, value in given.items()
            if name in fmt.supported_options or name in QUANTIZATION_OPTIONS}

