"""Quantization modes (ONNX so far): named modes, calibration checks, measured cost in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from onnx_weights import int8_weight_range

from fat_deploy.common.calibration import calibration_batch, held_out_inputs
from fat_deploy.contract.reuse import reusing_conversions
from fat_deploy.contract.timing import LatencyComparison
from fat_deploy.errors import FatDeployError
from fat_deploy.exporters import export
from fat_deploy.models import get_spec


@pytest.mark.parametrize(
    "fmt,precision,kwargs,message",
    [
        ("tflite", "palettize-4", {}, "tflite does not support precision palettize-4"),
        ("coreml", "int8-dynamic", {}, "coreml does not support precision int8-dynamic"),
        ("onnx", "int8", {}, "unknown precision 'int8'"),
        ("onnx", "int8-dynamic", {"calibration_method": "percentile"}, "--calibration-method applies to calibrated modes"),
        ("onnx", "int8-weights", {}, "onnx does not support precision int8-weights"),
        ("onnx", "fp32", {"keep_float": ["head"]}, "--keep-float applies to quantized modes only"),
        ("onnx", "fp16", {"explain": True}, "--explain applies to quantized modes only"),
        ("onnx", "fp32", {"int8_full_range": True}, "--int8-full-range applies to int8-dynamic and int8-static only"),
        ("tflite", "int8-static", {"int8_full_range": True}, "--int8-full-range is not supported for tflite"),
        ("coreml", "int8-weights", {"explain": True}, "--explain is not supported for coreml"),
        ("coreml", "int8-weights", {"keep_float": ["head"]}, "--keep-float is not supported for coreml"),
        ("onnx", "int8-static", {"int8_io": True}, "--int8-io is not supported for onnx"),
        ("tflite", "int8-dynamic", {"int8_io": True}, "--int8-io applies to int8-static only"),
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
    with pytest.raises(FatDeployError, match="1 of 1 images in .* cannot be read: a.jpg \\(not an image PIL can decode\\)"):
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


def _check_explain(worst: list[dict] | None, manifest: dict, op_types: set[str], at_least: int) -> None:  # type: ignore[type-arg]
    """--explain: layers of the quantized kinds, worst first, with images that were not calibration images."""
    assert worst and at_least <= len(worst) <= 10
    assert {layer["op_type"] for layer in worst} <= op_types
    added = [layer["added_db"] if layer["added_db"] is not None else float("inf") for layer in worst]
    assert added == sorted(added) and added[0] < 60  # something measurable was added
    explain = manifest["format_details"]["explain"]
    assert explain["worst_layers"] == worst and len(explain["images"]) == 4


def test_layers_are_ranked_by_the_noise_they_add() -> None:
    from fat_deploy.common.explain import LayerIO, rank_layers, sqnr_db

    layers = [
        LayerIO("stem", "Conv", ("input",), "a"),  # graph input is exact
        LayerIO("mid", "Conv", ("a",), "b"),
        LayerIO("head", "Gemm", ("b",), "c"),
        LayerIO("unmeasured", "Conv", ("c",), "d"),
    ]
    sqnr = {"a": 40.0, "b": 39.9, "c": 20.0}
    ranked = rank_layers(layers, sqnr)
    assert [e.name for e in ranked] == ["head", "stem", "mid"]
    assert ranked[0].input_sqnr_db == 39.9 and ranked[0].added_db == pytest.approx(20.04, abs=0.01)
    assert ranked[1].added_db == pytest.approx(40.0) and ranked[1].input_sqnr_db == float("inf")
    assert rank_layers([LayerIO("same", "Conv", ("a",), "b")], {"a": 30.0, "b": 35.0})[0].added_db == float("inf")
    import numpy as np

    reference = np.array([1.0, -1.0, 2.0, -2.0])
    assert sqnr_db(reference, reference) == float("inf")
    assert sqnr_db(reference, reference * 1.1) == pytest.approx(20.0)


@pytest.mark.slow
def test_keep_float_changes_the_graph_and_the_metrics(tmp_path: Path, photo_calibrated_checkpoint: Path) -> None:
    quantized = export("fat_b0", "onnx", "int8-dynamic", out=tmp_path / "all", checkpoint=photo_calibrated_checkpoint,
                       int8_full_range=True)
    kept = export("fat_b0", "onnx", "int8-dynamic", out=tmp_path / "kept", checkpoint=photo_calibrated_checkpoint,
                  keep_float=["head", "layers.3."])
    assert quantized.status == kept.status == "passed", (quantized.error, kept.error)
    details = [json.loads(a.manifest_path.read_text())["format_details"] for a in (quantized, kept)]  # type: ignore[union-attr]
    assert details[0]["kept_float_nodes"] == []
    assert any("head" in n for n in details[1]["kept_float_nodes"]) and len(details[1]["kept_float_nodes"]) > 3
    assert details[0]["weight_bits"] == 8 and max(map(abs, int8_weight_range(quantized.path))) > 64  # type: ignore[arg-type]
    # FAT's deploy form is convolutions except the classifier: the dynamic mode quantizes only the head's Gemm
    assert details[0]["ops"].get("MatMulInteger") == 1 and "MatMulInteger" not in details[1]["ops"]
    assert kept.size_bytes > quantized.size_bytes  # type: ignore[operator]
    assert kept.comparison["sqnr_db"] != quantized.comparison["sqnr_db"]  # type: ignore[index]


@pytest.mark.slow
def test_int8_dynamic_records_its_cost(tmp_path: Path, photo_calibrated_checkpoint: Path) -> None:
    artifact = export("fat_b0", "onnx", "int8-dynamic", out=tmp_path,
                      checkpoint=photo_calibrated_checkpoint, explain=True)
    assert artifact.status == "passed", artifact.error
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    # FAT's deploy form is 1x1 convs, not MatMuls: only the classifier is quantized in this mode
    _check_explain(artifact.explain, manifest, {"MatMul", "Gemm"}, at_least=1)
    assert artifact.explain[0]["name"] == "head/linear"  # type: ignore[index]
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
    # Random weights quantize badly (their statistics are not a trained model's); whatever the outcome,
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
                      checkpoint=photo_calibrated_checkpoint, explain=precision == "int8-dynamic")
    assert artifact.status == "passed", artifact.error
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    if precision == "int8-dynamic":
        _check_explain(artifact.explain, manifest, {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL"},
                       at_least=5)
    details = manifest["format_details"]
    assert details["quantizer"] == "ai-edge-quantizer"
    assert artifact.size_bytes <= 0.3 * details["float_size_bytes"]  # type: ignore[operator]
    assert details["io"]["input"]["dtype"] == "float32"  # drops into apps unchanged
    (comparison,) = manifest["verification"]["comparisons"].values()
    assert comparison["cosine_min"] >= 0.95 and comparison["sqnr_db"] > 10


def test_quantized_tflite_input_conversion() -> None:
    import numpy as np

    from fat_deploy.runtimes.tflite.tensors import from_output_dtype, to_input_dtype

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


@pytest.mark.slow
def test_coreml_w8a8_is_calibrated_and_its_simulated_cost_recorded(tmp_path: Path) -> None:
    artifact = export("fat_b0", "coreml", "w8a8", out=tmp_path, img_size=96, calibration_size=8)
    assert artifact.status == "exported-not-verified", artifact.error  # Core ML cannot run on Linux
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    details = manifest["format_details"]
    assert details["minimum_deployment_target"] == "iOS17"
    assert details["ops"].get("quantize", 0) > 10 and details["ops"].get("dequantize", 0) > 10
    assert any(op.startswith("constexpr_") for op in details["ops"])  # int8 weights
    simulated = manifest["verification"]["simulation_proxy"]
    assert "fake quantization" in simulated["runtime"] and 0.95 <= simulated["cosine_min"] < 1.0
    assert not set(details["calibration"]["images"]) & {n.split(":crop")[0] for n in manifest["verification"]["inputs"]}
    assert artifact.comparison is not None and artifact.comparison["source"] == "simulated"


def test_w8a8_needs_ios17(tmp_path: Path) -> None:
    with pytest.raises(FatDeployError, match="w8a8 needs --minimum-deployment-target iOS17"):
        export("fat_b0", "coreml", "w8a8", out=tmp_path, img_size=64, minimum_deployment_target="iOS16")


@pytest.mark.slow
def test_tflite_int8_static_io(tmp_path: Path, trained_looking_checkpoint: Path) -> None:
    # Only the I/O contract is checked here (verification skipped; the test bed judges int8-static's accuracy).
    with reusing_conversions():  # one float file, quantized twice
        for int8_io, dtype in ((False, "float32"), (True, "int8")):
            artifact = export("fat_b0", "tflite", "int8-static", out=tmp_path / dtype, img_size=64, calibration_size=4,
                              checkpoint=trained_looking_checkpoint, int8_io=int8_io, verify=False)
            assert artifact.path is not None, artifact.error
            io = json.loads(artifact.manifest_path.read_text())["format_details"]["io"]  # type: ignore[union-attr]
            assert io["input"]["dtype"] == io["output"]["dtype"] == dtype


def test_a_quantized_artifact_slower_than_float_is_flagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fat_deploy.runtimes.onnx.quantize as onnx_quantize

    slow = LatencyComparison(runtime="onnxruntime 1.32.0 CPU", threads=1, batch=1, runs=20, float_ms=10.0,
                             quantized_ms=12.5, note="test")
    monkeypatch.setattr(onnx_quantize, "artifact_latency", lambda *args, **kwargs: slow)
    artifact = export("fat_b0", "onnx", "int8-dynamic", out=tmp_path, img_size=64)
    assert artifact.status == "passed", artifact.error
    assert any(note.startswith("slower than its float version: 0.80x") for note in artifact.notes)
    barely = LatencyComparison(runtime="onnxruntime 1.32.0 CPU", threads=1, batch=1, runs=20, float_ms=10.0,
                               quantized_ms=9.0, note="test")
    monkeypatch.setattr(onnx_quantize, "artifact_latency", lambda *args, **kwargs: barely)
    flagged = export("fat_b0", "onnx", "int8-dynamic", out=tmp_path, img_size=64, force=True)
    assert any(note.startswith("under 1.2x its float version's speed: 1.11x") and ("VNNI" in note or "AVX2" in note)
               for note in flagged.notes)
