"""ORT Mobile: .ort files converted by onnxruntime's own tool, portable, verified, with the reduced-build op list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fat_deploy.errors import FatDeployError
from fat_deploy.exporters import export


def test_ort_options_are_the_onnx_ones(tmp_path: Path) -> None:
    with pytest.raises(FatDeployError, match="--nhwc is not supported for ort"):
        export("fat_b0", "ort", out=tmp_path, nhwc=True)
    with pytest.raises(FatDeployError, match="ort does not support precision int8-weights"):
        export("fat_b0", "ort", "int8-weights", out=tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_ort_file_is_portable_verified_and_lists_its_operators(tmp_path: Path) -> None:
    import onnxruntime as ort

    artifact = export("fat_b0", "ort", out=tmp_path, img_size=64)
    assert artifact.status == "passed", artifact.error
    assert artifact.path is not None and artifact.path.suffix == ".ort"
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    assert manifest["verification"]["runtime"] == "onnxruntime (ORT format)"
    (comparison,) = manifest["verification"]["comparisons"].values()
    assert comparison["passed"] and comparison["max_abs_diff"] < 1e-4
    config = manifest["format_details"]["required_operators_config"]
    assert "ai.onnx;" in config and "Conv" in config and f"# - {artifact.path.name}" in config
    assert "nchwc" not in config.lower() and ".fat-export" not in config  # portable; no temporary paths
    # The file's own ops are read back from the flatbuffer; the EPs' shares come from the ONNX it was made from.
    coverage = manifest["format_details"]["coverage"]
    assert coverage["format"] == "ort" and coverage["ops"]["LayerNormalization"] > 0
    assert all(not entry["checked"] for entry in coverage["accelerators"])
    eps = {entry["name"]: entry for entry in manifest["format_details"]["source_onnx_eps"]}
    assert eps["NNAPI"]["outside"]["Gelu"] > 0 and eps["CoreML MLProgram"]["partitions"] == 1
    assert any(note.startswith("NNAPI ") and "converted from" in note for note in artifact.notes)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.load_model_format", "ORT")  # as ORT Mobile loads it
    session = ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 64, 64]
