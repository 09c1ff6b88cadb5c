"""What a runtime's export format implements, and what the export pipeline hands it (:class:`ExportRequest`)."""

from __future__ import annotations

import dataclasses
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch.nn as nn

from fat_deploy.common.calibration import MIN_CALIBRATION_IMAGES, batches, unbatch
from fat_deploy.common.evaluation import Evaluation
from fat_deploy.common.labels import default_labels
from fat_deploy.contract.coverage import Coverage
from fat_deploy.contract.session import Backend, LoadRequest
from fat_deploy.contract.timing import LatencyComparison
from fat_deploy.errors import FatDeployError
from fat_deploy.models.spec import ModelSpec, output_classes
from fat_deploy.precision import CALIBRATED, PRECISIONS, QUANTIZED, Precision

__all__ = ["CALIBRATED", "PRECISIONS", "QUANTIZED", "Calibration", "Conversion", "Explanation", "ExportFormat",
           "ExportRequest", "NoOptions", "Precision", "QuantizationOptions", "RuntimeUnavailable", "UnsupportedOptionError",
           "option", "option_fields"]


class UnsupportedOptionError(FatDeployError):
    """An option, precision or format the request cannot have."""


class RuntimeUnavailable(Exception):
    """The format's runtime cannot run on this host (the message says why)."""


@dataclass
class ExportRequest:
    """Everything a format needs to convert and check one artifact."""

    model_name: str
    spec: ModelSpec
    reference: nn.Module  # the faithful fp32 model, eval mode
    model: nn.Module  # what is converted (deploy form unless turned off)
    img_size: tuple[int, int]
    precision: Precision = Precision.FP32
    batch: int = 1
    labels: list[str] | None = None
    evaluation: Evaluation | None = None  # --eval-dir: labeled images and the allowed top-1 drop
    # The format's own options (its ``Options`` dataclass, as a dict) and the quantization options.
    options: dict[str, Any] = field(default_factory=dict)
    # The float16-safe norm rewrite applied to ``model`` (fat_deploy.models.float16_norms): scale per norm.
    float16_norm_scales: dict[str, float] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return output_classes(self.reference)

    @property
    def class_names(self) -> list[str]:
        """The request's labels, or the defaults for its head (a request built without export() has none)."""
        return self.labels or default_labels(self.num_classes)[0]

    @property
    def dynamic_batch(self) -> bool:
        return bool(self.options.get("dynamic_batch"))

    @property
    def nhwc(self) -> bool:
        return bool(self.options.get("nhwc"))


@dataclass(frozen=True)
class Calibration:
    """What a calibrated mode measured its activation ranges on (``images``: files, or shipped photos' names)."""

    method: str
    samples: int
    images: list[str]

    @property
    def warning(self) -> str | None:
        """The manifest's caution when the ranges come from too few distinct images."""
        distinct = len(set(self.images))
        if distinct >= MIN_CALIBRATION_IMAGES:
            return None
        return f"only {distinct} distinct calibration images; {MIN_CALIBRATION_IMAGES}+ recommended"


@dataclass(frozen=True)
class Explanation:
    """``--explain``: layers ranked by the error they add (worst first), on held-out ``images``."""

    images: list[str]
    method: str
    worst_layers: list[dict[str, Any]]  # the worst few, for the manifest and the summary
    ranking: list[str] = field(default_factory=list)  # every measured layer's name, worst first (accuracy search)


@dataclass
class Conversion:
    """What :meth:`ExportFormat.convert` returns: the format's own manifest details, and the facts the pipeline acts
    on, typed (a quantized file's cost, calibration, layer ranking, summary lines)."""

    details: dict[str, Any] = field(default_factory=dict)  # the manifest's ``format_details`` (JSON-ready)
    notes: list[str] = field(default_factory=list)  # lines for the fat-export summary
    calibration: Calibration | None = None
    float_size_bytes: int | None = None  # a quantized file's float version
    latency: LatencyComparison | None = None  # a quantized file against its float version
    explanation: Explanation | None = None
    # A PyTorch model computing what the file computes (e.g. fake-quantized W8A8): verification measures it where the
    # file's runtime cannot run on this host. Never written to the manifest.
    simulation: nn.Module | None = None

    def merge(self, other: Conversion) -> Conversion:
        """This conversion with ``other``'s details, notes and facts added (``other`` wins where both have one)."""
        self.details.update(other.details)
        self.notes.extend(other.notes)
        for name in ("calibration", "float_size_bytes", "latency", "explanation", "simulation"):
            if getattr(other, name) is not None:
                setattr(self, name, getattr(other, name))
        return self

    def manifest_details(self) -> dict[str, Any]:
        """``format_details`` as the manifest stores them (the typed facts under their long-standing keys)."""
        details = dict(self.details)
        if self.calibration is not None:
            details["calibration"] = asdict(self.calibration)
            if warning := self.calibration.warning:
                details.setdefault("warning", warning)
        if self.float_size_bytes is not None:
            details["float_size_bytes"] = self.float_size_bytes
        if self.latency is not None:
            details["latency"] = self.latency.as_dict()
        if self.explanation is not None:
            details["explain"] = asdict(self.explanation)
        return details


def option(flag: str, help: str, *, default: Any = None, choices: tuple[str, ...] | None = None,  # noqa: A002
           metavar: str | None = None) -> Any:
    """A field of a runtime's options dataclass; ``fat-export`` makes its command-line flag from it.

    The field's type says the flag's kind: ``bool`` a switch, ``list[str]`` one or more values, else one value.
    """
    return field(default=default, metadata={"flag": flag, "help": help, "choices": choices, "metavar": metavar})


@dataclass(frozen=True)
class NoOptions:
    """A format without options of its own."""


@dataclass(frozen=True)
class QuantizationOptions:
    """Options of the calibrated modes, shared by every format (each says which calibration methods it has)."""

    calibration: str | None = option("--calibration", "int8-static / w8a8: folder of calibration images "
                                     "(default: shipped sample photos)", metavar="DIR")
    calibration_size: int | None = option("--calibration-size", "int8-static / w8a8: calibration samples (default 32)",
                                          metavar="N")
    calibration_method: str | None = option("--calibration-method", "int8-static: calibrator (default minmax; "
                                            "percentile: onnx only)",
                                            choices=("minmax", "percentile"))


def option_fields(options_type: type) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(options_type)


def keep_float_option() -> Any:
    return option("--keep-float", "quantized modes: keep layers whose name matches (substring or glob; see "
                  "--explain) in float", metavar="PATTERN")


def explain_option() -> Any:
    return option("--explain", "quantized modes: rank layers by the error they add, on held-out images",
                  default=False)


@dataclass
class AppClassifier:
    """An app-ready file's own call from an encoded image to class scores, as an app makes it (fat-latency
    --end-to-end). ``decode`` is what the app does before the call (the identity where the file takes the bytes);
    ``inside`` names what the call does itself."""

    client: str
    decode: Callable[[bytes], Any]
    classify: Callable[[Any], np.ndarray]
    inside: str
    close: Callable[[], None] = lambda: None


class ExportFormat(ABC):
    """A target format: converts a model into a file and runs that file where it can."""

    name: ClassVar[str]
    backend: ClassVar[Backend]  # runs the files (verification and fat-latency share it)
    suffix: ClassVar[str]
    precisions: ClassVar[tuple[Precision, ...]]
    runtime: ClassVar[str]
    converter_modules: ClassVar[tuple[str, ...]]  # importable names the converter needs
    extra: ClassVar[str]  # pip extra that installs them
    Options: ClassVar[type] = NoOptions  # the format's own options, a frozen dataclass of :func:`option` fields
    calibration_methods: ClassVar[tuple[str, ...]] = ("minmax",)
    artifact_tags: ClassVar[dict[str, str]] = {}  # switch option -> its tag in the file name (another form)
    conversion_weight: ClassVar[float] = 1.0  # relative conversion time: parallel exports start the slowest first
    bundle_platform: ClassVar[str | None] = None  # --bundle: the platform folder ("android", "ios", "web")
    bundle_options: ClassVar[dict[str, Any]] = {}  # --bundle: the options of the app-ready form
    # Where devices run this format's float32 files in float16 unasked (a GPU delegate's default, a runtime's
    # default precision on ARMv8.2): such files are also checked in float16 arithmetic, and warned about.
    float16_on_devices: ClassVar[str | None] = None
    # How intermediate_tensors() reads every tensor of a file (None: it cannot).
    intermediates_reader: ClassVar[str | None] = None
    # Whether the emulation root has this format's runtime for aarch64 (fat_deploy.common.aarch64; --arm64): its
    # backend's standalone adapter is run there.
    runs_on_aarch64: ClassVar[bool] = False
    # The option that makes the format's app-ready form (e.g. "mediapipe"), whose file app_classifier() runs.
    app_option: ClassVar[str | None] = None

    @property
    def supported_options(self) -> frozenset[str]:
        return frozenset(f.name for f in option_fields(self.Options))

    def check_options(self, precision: Precision, options: dict[str, Any]) -> None:
        """Refuse option values this format cannot honour with ``precision`` (set options only are passed)."""
        for name in ("keep_float", "explain"):
            if options.get(name) and precision not in QUANTIZED:
                raise UnsupportedOptionError(f"{flag_of(self.Options, name)} applies to quantized modes only, "
                                             f"not {precision}")

    def unavailable_reason(self) -> str | None:
        """Why this format cannot be exported here (a missing package), or None."""
        missing = [m for m in self.converter_modules if importlib.util.find_spec(m) is None]
        if missing:
            return (f"{self.name} export needs {', '.join(missing)}: "
                    f"pip install 'fat-deploy[{self.extra}]'")
        return None

    def artifact_name(self, model_name: str, precision: Precision, options: dict[str, Any]) -> str:
        """``<model>_<format>_<precision>[_<tag>...]<suffix>`` (see docs/DESIGN.md)."""
        tags = "".join(f"_{tag}" for option, tag in self.artifact_tags.items() if options.get(option))
        return f"{model_name}_{self.name}_{precision}{tags}{self.suffix}"

    def runtime_form(self, deployed: nn.Module) -> nn.Module:
        """Exact rewrites of the deploy form that this runtime's kernels need (default: none)."""
        return deployed

    @abstractmethod
    def convert(self, request: ExportRequest, path: Path) -> Conversion:
        """Write the artifact to ``path``; return what the manifest and the summary need to know of it."""

    def outputs_probabilities(self, request: ExportRequest) -> bool:
        """True when the artifact outputs probabilities: ``run`` then returns log-probabilities, and verification
        compares them centred (log-probabilities minus their mean: the logits up to the constant softmax drops)."""
        return False

    def run(self, path: Path, request: ExportRequest, inputs: np.ndarray, batch: int) -> np.ndarray:
        """Logits of the artifact for NCHW float32 ``inputs``; RuntimeUnavailable if it cannot run here.

        Runs the file with the same runner the latency harness times (one thread), batch by batch.
        """
        backend = self.backend
        if reason := backend.unavailable_reason("cpu"):
            raise RuntimeUnavailable(reason)
        runner = backend.load(LoadRequest(model_name=request.model_name, model=None, artifact=path, batch=batch,
                                          img_size=request.img_size, threads=1))
        return unbatch([runner.logits(runner.prepare(group)) for group in batches(inputs, batch)], len(inputs))

    def intermediate_tensors(self, path: Path, request: ExportRequest, image: np.ndarray) -> list[np.ndarray] | None:
        """Every tensor the runtime computes for one NCHW float32 ``image`` (float values, any layout), to find the
        first block where the file departs from PyTorch (:mod:`fat_deploy.common.departure`); None where the runtime
        cannot show them (the default)."""
        return None

    def app_classifier(self, path: Path) -> AppClassifier | None:
        """The app-ready form's (``app_option``) image-to-scores call on the file at ``path``; None: no such form."""
        return None

    def is_artifact(self, path: Path) -> bool:
        """Whether ``path`` is a file of this format as fat-export writes it (a regular file; a format that writes a
        folder says what belongs in it): ``--force`` and ``--bundle --force`` replace only that."""
        return path.is_file() and not path.is_symlink()

    def coverage(self, path: Path) -> Coverage | None:
        """The file's ops by type, layout transposes and each accelerator path's share, read from the file itself
        (``fat-inspect``, and every manifest); None when the format has no reader."""
        return None

    def inspect(self, path: Path, request: ExportRequest) -> list[str]:
        """Structural problems found without running the artifact (empty when fine)."""
        return []

    def integration_guide(self, file_name: str, manifest: dict[str, Any]) -> str:
        """--bundle: a Markdown section on loading ``file_name`` in an app (what it takes, a short snippet)."""
        return f"## {file_name}\n\nSee its manifest for the input and output tensors."

    def write_bundle_extras(self, folder: Path, manifest: dict[str, Any]) -> list[str]:
        """--bundle: files an app build needs beside the artifact (written into ``folder``); their names."""
        return []

    @abstractmethod
    def io_spec(self, request: ExportRequest) -> dict[str, Any]:
        """Input/output names, shapes, dtypes and layout, for the manifest."""


def require_module(module: str, flag: str, extra: str) -> None:
    """Refuse an option whose package is not installed, naming the extra that installs it."""
    if importlib.util.find_spec(module) is None:
        raise UnsupportedOptionError(f"{flag} needs {module}: pip install 'fat-deploy[{extra}]'")


def flag_of(options_type: type, name: str) -> str:
    """The command-line flag of option ``name`` (the name itself if the type has no such field)."""
    for candidate in (options_type, QuantizationOptions):
        for f in option_fields(candidate):
            if f.name == name:
                return str(f.metadata["flag"])
    return name
