"""``fat-inspect --compare``: where an exported file departs from PyTorch, block by block.

The file's manifest (written beside it by fat-export) names the model, the input size and the precision; the
checkpoint it was exported from is given again (its sha256 must match the manifest's). The file runs one sample
photo in its runtime with every intermediate tensor kept, and :mod:`fat_deploy.common.departure` names the first
block whose output the file does not reproduce.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

from fat_deploy.common.calibration import verification_inputs
from fat_deploy.common.departure import Departure, locate_departure
from fat_deploy.common.files import sha256_of
from fat_deploy.common.inputs import private_view
from fat_deploy.common.verify import TOLERANCES
from fat_deploy.contract.formats import ExportFormat, ExportRequest
from fat_deploy.errors import FatDeployError
from fat_deploy.exporters.manifest import manifest_path_for
from fat_deploy.models.deploy import to_deploy
from fat_deploy.models.registry import create_model, get_spec
from fat_deploy.precision import parse_precision
from fat_deploy.registry import formats

MAX_MANIFEST_BYTES = 64 * 1024 * 1024


def shows_intermediates(fmt: ExportFormat) -> bool:
    return fmt.intermediates_reader is not None


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest fat-export wrote beside ``path``, or a one-line error."""
    manifest = manifest_path_for(path)
    if not manifest.is_file() or manifest.is_symlink():
        raise FatDeployError(f"{path}: no manifest beside it ({manifest.name}): --compare needs the one fat-export "
                             "writes (model, input size, precision, checkpoint digest)")
    if manifest.stat().st_size > MAX_MANIFEST_BYTES:
        raise FatDeployError(f"{manifest}: too large for a fat-export manifest")
    try:
        payload = json.loads(manifest.read_text(encoding="utf-8"))
        if not isinstance(payload, dict):
            raise ValueError("not a JSON object")
        height, width = (int(v) for v in payload["preprocessing"]["center_crop"])
        payload["img_size"] = (height, width)
        if not isinstance(payload.get("model"), str) or not isinstance(payload.get("precision"), str):
            raise ValueError("no model or precision named")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise FatDeployError(f"{manifest}: not a fat-export manifest ({type(error).__name__}: {error})") from None
    return payload


def reference_model(path: Path, manifest: dict[str, Any], checkpoint: Path | None) -> nn.Module:
    """The PyTorch model the file was exported from, in the form it was exported from (deploy form or not)."""
    recorded = manifest.get("checkpoint")
    if not isinstance(recorded, dict):
        raise FatDeployError(f"{path} was exported from random weights: there is no model to compare it with "
                             "(export from a checkpoint, then --compare --checkpoint it)")
    if checkpoint is None:
        raise FatDeployError(f"{path} was exported from {recorded.get('file')}: give it with --checkpoint")
    if sha256_of(checkpoint) != recorded.get("sha256"):
        raise FatDeployError(f"{checkpoint} is not the checkpoint {path.name} was exported from (sha256 differs "
                             "from its manifest's)")
    model = create_model(manifest["model"], checkpoint=checkpoint)
    return to_deploy(model) if manifest.get("deploy_form", True) else model


def compare_file(path: Path, fmt: ExportFormat, checkpoint: Path | None, tolerance: float | None = None) -> Departure:
    """Each block of ``path`` against PyTorch on one sample photo; see the module docstring."""
    if not shows_intermediates(fmt):
        able = ", ".join(name for name, other in formats().items() if shows_intermediates(other))
        raise FatDeployError(f"{path}: --compare cannot read the intermediate tensors of {fmt.name} files (it can for: "
                             f"{able})")
    manifest = read_manifest(path)
    output = manifest.get("output") or {}
    if manifest.get("format") != fmt.name or output.get("meaning") != "logits":
        raise FatDeployError(f"{path}: --compare takes plain {fmt.name} files with logits out (app forms such as "
                             "--mediapipe and --image-bytes are compared by fat-export's verification only)")
    if reason := fmt.unavailable_reason():
        raise FatDeployError(f"{path}: {reason}")
    model = reference_model(path, manifest, checkpoint)
    spec = get_spec(manifest["model"])
    height, width = manifest["img_size"]
    precision = parse_precision(str(manifest["precision"]))
    request = ExportRequest(model_name=spec.name, spec=spec, reference=model, model=model, img_size=(height, width),
                            precision=precision)
    image = verification_inputs(spec, (height, width), photos=1, random=0)[0][:1]
    with private_view(path) as view, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LiteRT warns that keeping every tensor is for debugging: it is
        try:
            tensors = fmt.intermediate_tensors(view, request, image)
        except Exception as error:  # noqa: BLE001 - a file its runtime rejects is a user error here
            text = " ".join(str(error).replace(str(view), str(path)).split())[:300] or type(error).__name__
            raise FatDeployError(f"{path}: {fmt.runtime} cannot run it: {text}") from None
    if tensors is None:
        raise FatDeployError(f"{path}: this {fmt.name} file's form does not show its intermediate tensors")
    limit = TOLERANCES[precision].max_abs_rel if tolerance is None else tolerance
    return locate_departure(model, np.ascontiguousarray(image), tensors, limit)
