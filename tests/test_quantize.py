"""Quantization modes (ONNX so far): named modes, calibration checks, measured cost in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fat_deploy.errors import FatDeployError
from fat_deploy.exporters import export
from fat_deploy.exporters.calibration import calibration_batch, held_out_inputs
from fat_deploy.models import get_spec


@pytest.mark.parametrize(
    "fmt,precision,kwargs,message",
    [
        ("tflite", "palettize-4", {}, "tflite does not support precision palettize-4"),
        ("coreml", "int8-dynamic", {}, "coreml does not support precision int8-dynamic"),
        ("onnx", "int8", {}, "unknown precision 'int8'"),
        ("onnx", "int8-dynamic", {"calibration_method": "entropy"}, "--calibration-method applies to int8-static only"),
        ("onnx", "int8-weights", {}, "onnx does not support precision int8-weights"),
        ("onnx", "fp32", {"keep_float": ["head"]}, "--keep-float applies to quantized modes only"),
    ],
)
def test_modes_are_named_and_checked_up_front(tmp_path: Path, fmt: str, precision: str, kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(FatDeployError, match=message):
        export("fat_b0", fmt, precision, out=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


def test_calibration_folder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FatDeployError, match="no images in"):
        export("fat_b0", "onnx", "int8-static", out=tmp_path / "out", calibration=empty)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(FatDeployError, match="none of the 1 images .* could be read"):
        export("fat_b0", "onnx", "int8-static", out=tmp_path / "out", calibration=broken)
    with pytest.raises(FatDeployError, match="image folder not found"):
        export("fat_b0", "onnx", "int8-static", out=tmp_path / "out", calibration=tmp_path / "missing")


def test_calibration_and_evaluation_images_are_disjoint() -> None:
    spec = get_spec("fat_b0")
    calibration, sources = calibration_batch(spec, (64, 64), count=12)
    assert calibration.shape == (12, 3, 64, 64) and len(sources) == 4
    held_out, names = held_out_inputs(spec, (64, 64), sources)
    assert len(held_out) >= 8
    assert not {n.split(":crop")[0] for n in names} & set(sources)


@pytest.mark.slow
def test_int8_dynamic_records_its_cost(tmp_path: Path, photo_calibrated_checkpoint: Path) -> None:
    artifact = export("fat_b0", "onnx", "int8-dynamic", out=tmp_path,
                      checkpoint=photo_calibrated_checkpoint)
    assert artifact.status == "passed", artifact.error
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    (comparison,) = manifest["verification"]["comparisons"].values()
    for key in ("cosine_min", "sqnr_db", "top1_agreement", "top5_overlap"):
        assert key in comparison
    assert comparison["cosine_min"] >= 0.95
    details = manifest["format_details"]
    assert "MatMulInteger" in details["ops"] or "DynamicQuantizeLinear" in details["ops"]
    assert "Conv" in details["ops"]  # convolutions stay float in the dynamic mode
    assert details["float_size_bytes"] > artifact.size_bytes  # type: ignore[operator]


@pytest.mark.slow
def test_int8_static_is_measured_and_never_placed_when_it_collapses(
    tmp_path: Path, photo_calibrated_checkpoint: Path
) -> None:
    # Random weights quantize badly (toolchain.md: "only indicative"); whatever the outcome,
    # the cost is measured against held-out images and a collapse leaves no artifact.
    artifact = export("fat_b0", "onnx", "int8-static", out=tmp_path, img_size=96, calibration_size=8,
                      checkpoint=photo_calibrated_checkpoint)
    assert artifact.comparison is not None and "sqnr_db" in artifact.comparison
    if artifact.status == "failed":
        assert artifact.path is None and not any(p.suffix == ".onnx" for p in tmp_path.iterdir())
    else:
        manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
        assert "QuantizeLinear" in manifest["format_details"]["ops"]
        assert manifest["format_details"]["calibration"]["samples"] == 8


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["int8-dynamic", "int8-weights"])
def test_tflite_int8_weight_modes(tmp_path: Path, precision: str, photo_calibrated_checkpoint: Path) -> None:
    artifact = export("fat_b0", "tflite", precision, out=tmp_path,
                      checkpoint=photo_calibrated_checkpoint)
    assert artifact.status == "passed", artifact.error
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    details = manifest["format_details"]
    assert details["quantizer"] == "ai-edge-quantizer"
    assert artifact.size_bytes <= 0.3 * details["float_size_bytes"]  # type: ignore[operator]
    assert details["io"]["input"]["dtype"] == "float32"  # drops into apps unchanged
    (comparison,) = manifest["verification"]["comparisons"].values()
    assert comparison["cosine_min"] >= 0.95 and comparison["sqnr_db"] > 10


def test_quantized_tflite_input_conversion() -> None:
    import numpy as np

    from fat_deploy.exporters.tflite import from_output_dtype, to_input_dtype

    detail = {"dtype": np.int8, "quantization": (0.5, -3)}
    quantized = to_input_dtype(np.array([0.0, 1.0, -100.0, 100.0], np.float32), detail)
    assert quantized.dtype == np.int8 and quantized.tolist() == [-3, -1, -128, 127]
    assert from_output_dtype(quantized[:2], detail).tolist() == [0.0, 1.0]
    assert to_input_dtype(np.ones(2), {"dtype": np.float32, "quantization": (0.0, 0)}).dtype == np.float32


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["int8-weights", "palettize-6", "int4-block"])
def test_coreml_weight_compression(tmp_path: Path, precision: str) -> None:
    artifact = export("fat_b0", "coreml", precision, out=tmp_path, img_size=64)
    assert artifact.status == "exported-not-verified", artifact.error
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    details = manifest["format_details"]
    assert details["compression"] and artifact.size_bytes < 0.6 * details["float_size_bytes"]  # type: ignore[operator]
    assert any(op.startswith("constexpr_") for op in details["ops"])
    assert manifest["verification"]["fp16_proxy"]["covers"].endswith("weight compression not simulated")
    if precision == "int4-block":
        assert details["minimum_deployment_target"] == "iOS18"


def test_int4_needs_ios18(tmp_path: Path) -> None:
    with pytest.raises(FatDeployError, match="int4-block needs --minimum-deployment-target iOS18"):
        export("fat_b0", "coreml", "int4-block", out=tmp_path, img_size=64, minimum_deployment_target="iOS16")
    assert [p.name for p in tmp_path.iterdir()] == []
