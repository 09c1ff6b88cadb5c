"""fat-export: bad input is refused up front; every artifact is verified before it is put in place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fat_deploy.cli.export import main as fat_export
from fat_deploy.common.files import sha256_of
from fat_deploy.common.verify import TOLERANCES, Tolerance, compare
from fat_deploy.exporters import export, get_format, list_formats
from fat_deploy.exporters.manifest import validate_manifest


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = fat_export(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("fat-export: error:")]
    assert len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------- refused before any work


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--model", "fat_b7"], "unknown model 'fat_b7': did you mean"),
        (["--model", "fat_b0", "--format", "savedmodel"],
         f"unknown format 'savedmodel': choose from {', '.join(list_formats())} or all"),
        (["--model", "fat_b0", "--precision", "int3"], "unknown precision 'int3'"),
        (["--model", "fat_b0", "--format", "onnx", "--nhwc"], "--nhwc is not supported for onnx"),
        (["--model", "fat_b0", "--format", "tflite", "--dynamic-batch"], "--dynamic-batch is not supported for tflite"),
        (["--model", "fat_b0", "--format", "onnx", "--coreml-input", "tensor"], "--coreml-input is not supported for onnx"),
        (["--model", "fat_b0", "--img-size", "16"], "too small for fat_b0: it needs at least 32 px"),
        (["--model", "fat_b0", "--img-size", "64", "64", "64"], "one or two numbers"),
        (["--model", "fat_b0", "--batch", "0"], "--batch must be at least 1"),
        (["--model", "fat_b0", "--checkpoint", "/nonexistent/ckpt.pth"], "checkpoint not found"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, *argv, "--out", str(tmp_path / "out"))
    assert code == 2
    assert message in error_line(err)
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_existing_artifact_is_not_overwritten(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    existing = tmp_path / "fat_b0_onnx_fp32.onnx"
    existing.write_bytes(b"user's file")
    code, _, err = run_cli(capsys, "--model", "fat_b0", "--format", "onnx", "--out", str(tmp_path))
    assert code == 2 and "already exists; pass --force" in error_line(err)
    assert existing.read_bytes() == b"user's file"


def test_unwritable_output(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "--model", "fat_b0", "--out", str(blocker / "sub"))
    assert code == 2 and "cannot create output folder" in error_line(err)


def test_missing_converter_names_the_extra(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "litert_torch" else real(name, *a))
    code, _, err = run_cli(capsys, "--model", "fat_b0", "--format", "tflite", "--out", str(tmp_path))
    assert code == 2 and "pip install 'fat-deploy[tflite]'" in error_line(err)


def test_labels_must_match_the_classes(tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    with pytest.raises(Exception, match="has 2 labels, the model has 1000 classes"):
        export("fat_b0", "coreml", out=tmp_path, labels=labels)


def test_compare_metrics_and_tolerance() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((4, 10))
    same = compare(reference, reference.copy(), TOLERANCES["fp32"])
    assert same.passed and same.max_abs_diff == 0 and same.top1_agreement == 1.0
    noisy = compare(reference, reference + 0.5 * rng.standard_normal((4, 10)), TOLERANCES["fp32"])
    assert not noisy.passed and noisy.cosine_min < 0.99999
    broken = compare(reference, np.full_like(reference, np.inf), TOLERANCES["fp16"])
    assert not broken.passed and "non-finite" in broken.failures[0]


def test_top1_gate_counts_clear_float_top1_only() -> None:
    # Input 0: a near tie (lead 0.1% of the range) that flips; input 1: a clear top-1 that is kept.
    reference = np.array([[10.0, 9.99, 0.0, 1.0], [10.0, 2.0, 0.0, 1.0]])
    flipped_tie = np.array([[9.99, 10.0, 0.0, 1.0], [10.0, 2.0, 0.0, 1.0]])
    result = compare(reference, flipped_tie, TOLERANCES["int8-static"])
    assert result.top1_agreement == 0.5 and result.clear_inputs == 1 and result.top1_agreement_clear == 1.0
    assert "top-1" not in " ".join(result.failures)
    flipped_clear = np.array([[10.0, 9.99, 0.0, 1.0], [2.0, 10.0, 0.0, 1.0]])
    result = compare(reference, flipped_clear, TOLERANCES["int8-static"])
    assert result.top1_agreement_clear == 0.0 and any("clear float top-1" in f for f in result.failures)


# ---------------------------------------------------------------- end to end (slow)

FP16_FORMATS = [f for f in list_formats() if "fp16" in get_format(f).precisions]


def check_full_size_export(path: Path, manifest: dict[str, Any], fmt: str, precision: str) -> None:
    """What every 224 px export of FAT-B0 must hold: a valid manifest, the file's digest, the precision's tolerance,
    and a passed comparison with PyTorch (Core ML: the structural checks and, for fp16, the PyTorch proxy)."""
    assert validate_manifest(manifest) == []
    assert manifest["file"]["sha256"] == sha256_of(path)
    assert manifest["precision"] == precision and manifest["input"]["shape"][-2:] == [224, 224]
    verification = manifest["verification"]
    assert verification["tolerance"] == TOLERANCES[precision].as_dict()
    if precision == "fp16":  # float16 arithmetic simulated as devices compute it, the norms made float16-safe
        check = verification["fp16_check"]
        assert check["passed"] and [r["arithmetic"] for r in check["results"]] == ["fp16-storage", "fp16-accumulation"]
        assert check["float16_safe_norms"]["scaled"] > 0
    if fmt == "coreml":
        assert "Core ML prediction needs macOS" in verification["runtime_unavailable_reason"]
        assert verification["structure_problems"] == []
        if precision == "fp16":
            assert verification["fp16_proxy"]["passed"]
    else:
        (comparison,) = verification["comparisons"].values()
        assert comparison["passed"] and comparison["inputs"] >= 6
        assert any(name.startswith("skimage:") for name in verification["inputs"])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list_formats())
def test_every_format_fp32_with_trained_looking_weights(trained_exports: dict[str, Any], fmt: str) -> None:
    record = trained_exports[fmt]  # one fat-export --format all run, shared (tests/conftest.py)
    assert record["status"] == ("exported-not-verified" if fmt == "coreml" else "passed"), record["error"]
    manifest = json.loads(Path(record["manifest"]).read_text())
    folder = Path(record["path"]).parent
    assert manifest["checkpoint"]["sha256"] and not any(p.name.startswith(".") for p in folder.iterdir())
    check_full_size_export(Path(record["path"]), manifest, fmt, "fp32")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", FP16_FORMATS)
def test_every_format_fp16(tmp_path: Path, fmt: str) -> None:
    artifact = export("fat_b0", fmt, "fp16", out=tmp_path)
    assert artifact.status == ("exported-not-verified" if fmt == "coreml" else "passed"), artifact.error
    assert artifact.path is not None and artifact.path.exists()
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    assert manifest["checkpoint"] == "random init"
    check_full_size_export(artifact.path, manifest, fmt, "fp16")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


@pytest.mark.slow
def test_onnx_dynamic_batch(tmp_path: Path) -> None:
    import onnxruntime as ort

    artifact = export("fat_b0", "onnx", out=tmp_path, dynamic_batch=True, img_size=96)
    assert artifact.status == "passed", artifact.error
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    assert set(manifest["verification"]["comparisons"]) == {"batch1", "batch4"}
    assert manifest["input"]["shape"][0] == "batch"
    session = ort.InferenceSession(str(artifact.path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": np.zeros((3, 3, 96, 96), np.float32)})[0].shape == (3, 1000)
    import onnx

    graph = onnx.load(str(artifact.path)).graph
    # Nodes are named after their PyTorch modules (for --keep-float); no stack traces ship.
    assert any(node.name.startswith("layers.0.blocks.0.cpe/") for node in graph.node)
    assert not any(node.metadata_props for node in graph.node)


@pytest.mark.slow
def test_tflite_nhwc_input(tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    artifact = export("fat_b0", "tflite", out=tmp_path, nhwc=True, img_size=96)
    assert artifact.status == "passed", artifact.error
    (source,) = Interpreter(str(artifact.path)).get_input_details()
    assert list(source["shape"]) == [1, 96, 96, 3]
    coverage = json.loads(artifact.manifest_path.read_text())["format_details"]["coverage"]  # type: ignore[union-attr]
    xnnpack = coverage["accelerators"][0]
    assert xnnpack["name"] == "XNNPACK" and xnnpack["partitions"] == 1 and xnnpack["outside"] == {}
    assert xnnpack["takes"] == xnnpack["total"] == sum(coverage["ops"].values()) and "XNNPACK whole" in artifact.notes
    # LiteRT's form keeps the norms in NHWC: at most 5 layout transposes per FAT-B0 block (12 blocks; 115 in all
    # when the norms' channel mean went through a reshape).
    assert coverage["layout_transposes"] == coverage["ops"]["TRANSPOSE"] <= 5 * 12


@pytest.mark.slow
def test_coreml_image_classifier_spec(tmp_path: Path) -> None:
    import coremltools as ct

    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"class_{i}" for i in range(1000)))
    artifact = export("fat_b0", "coreml", out=tmp_path / "out", labels=labels, img_size=96,
                      minimum_deployment_target="iOS17")
    assert artifact.status == "exported-not-verified"
    spec = ct.utils.load_spec(str(artifact.path))
    (source,) = spec.description.input
    assert source.name == "image" and source.type.imageType.width == 96
    assert source.type.imageType.colorSpace == ct.proto.FeatureTypes_pb2.ImageFeatureType.RGB
    assert {o.name for o in spec.description.output} == {"classLabel", "classLabel_probs"}
    assert list(spec.mlProgram.functions["main"].block_specializations)  # an ML program
    assert spec.description.metadata.userDefined["mean"] == "0.485,0.456,0.406"
    from fat_deploy.runtimes.coreml.converter import CoreMLFormat

    assert CoreMLFormat.classifier_labels(spec) == [f"class_{i}" for i in range(1000)]
    meta = spec.description.metadata  # what Xcode shows
    assert meta.author == "fat-deploy" and meta.versionString.startswith("fat-deploy ") and meta.license
    assert "96x96 px" in source.shortDescription and "shorter side to 109 px" in source.shortDescription
    assert all(o.shortDescription for o in spec.description.output)
    assert spec.description.predictedFeatureName == "classLabel"
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    assert manifest["labels"]["source"] == f"labels file {labels.name}"  # no host path in what ships
    assert manifest["format_details"]["minimum_deployment_target"] == "iOS17"


@pytest.mark.slow
def test_coreml_tensor_variant(tmp_path: Path) -> None:
    import coremltools as ct

    artifact = export("fat_b0", "coreml", out=tmp_path, coreml_input="tensor", img_size=96)
    assert artifact.path is not None and artifact.path.name == "fat_b0_coreml_fp32_tensor.mlpackage"
    spec = ct.utils.load_spec(str(artifact.path))
    assert [i.name for i in spec.description.input] == ["input"]
    assert [o.name for o in spec.description.output] == ["logits"]


@pytest.mark.slow
def test_forced_verification_failure_leaves_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An existing good artifact must survive a failed --force export.
    good = tmp_path / "fat_b0_onnx_fp32.onnx"
    good.write_bytes(b"previous good artifact")
    monkeypatch.setitem(TOLERANCES, "fp32", Tolerance(max_abs_rel=0.0, min_cosine=1.1, min_top1_agreement=1.0))
    code, out, err = run_cli(capsys, "--model", "fat_b0", "--format", "onnx", "--img-size", "64",
                             "--out", str(tmp_path), "--force", "--json")
    assert code == 1
    (record,) = json.loads(out)
    assert record["status"] == "failed" and "verification outside tolerance" in record["error"]
    assert record["path"] is None
    assert "run again with --verbose" in err
    assert good.read_bytes() == b"previous good artifact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fat_b0_onnx_fp32.onnx"]


@pytest.mark.slow
def test_cli_json_and_force(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = ["--model", "fat_b0", "--format", "onnx", "--img-size", "64", "--out", str(tmp_path), "--json"]
    code, out, _ = run_cli(capsys, *args)
    assert code == 0
    (record,) = json.loads(out)
    assert record["status"] == "passed" and Path(record["path"]).exists()
    code, _, err = run_cli(capsys, *args)
    assert code == 2 and "already exists" in error_line(err)
    code, out, _ = run_cli(capsys, *args, "--force")
    assert code == 0 and json.loads(out)[0]["status"] == "passed"


@pytest.mark.slow
def test_checkpoint_is_recorded(tmp_path: Path, fat_b0: torch.nn.Module) -> None:
    checkpoint = tmp_path / "weights.pth"
    torch.save(fat_b0.state_dict(), checkpoint)
    artifact = export("fat_b0", "onnx", out=tmp_path / "out", checkpoint=checkpoint, img_size=64)
    assert artifact.status == "passed", artifact.error
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    assert manifest["checkpoint"]["sha256"] == sha256_of(checkpoint)


@pytest.mark.parametrize("size", [224, 128, 96])
def test_manifest_resize_contract_is_what_preprocessing_does(size: int) -> None:
    # An app following the manifest (resize the shorter side, centre-crop, normalise) gets the same tensor.
    from PIL import Image

    from fat_deploy.common.calibration import preprocess, resize_contract
    from fat_deploy.models import get_spec

    spec = get_spec("fat_b0")
    photo = Image.fromarray(np.random.default_rng(size).integers(0, 255, (300, 500, 3), dtype=np.uint8))
    shorter = resize_contract(spec, (size, size))["resize_shorter_side"]
    assert shorter == int(size / 0.875)  # timm's eval resize: floor(size / crop_pct)
    resized = photo.resize((int(500 * shorter / 300), shorter), Image.Resampling.BICUBIC)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    app = np.asarray(resized.crop((left, top, left + size, top + size)), np.float32) / 255.0
    app = ((app - np.array(spec.mean, np.float32)) / np.array(spec.std, np.float32)).transpose(2, 0, 1)
    np.testing.assert_allclose(preprocess(photo, spec, (size, size)), app, atol=1e-6)


@pytest.mark.slow
def test_onnx_manifest_says_what_ort_mobile_would_take(tmp_path: Path) -> None:
    artifact = export("fat_b0", "onnx", out=tmp_path, img_size=64)
    coverage = json.loads(artifact.manifest_path.read_text())["format_details"]["coverage"]  # type: ignore[union-attr]
    report = {entry["name"]: entry for entry in coverage["accelerators"]}
    assert set(report) == {"NNAPI", "CoreML NeuralNetwork", "CoreML MLProgram"}
    for info in report.values():
        assert 0 < info["takes"] <= info["total"] and info["partitions"] >= 1
    # FAT's Gelu and LayerNormalization are outside NNAPI's op table (each counted); the ML program EP takes all.
    assert report["NNAPI"]["outside"]["LayerNormalization"] == coverage["ops"]["LayerNormalization"] > 0
    assert report["NNAPI"]["outside"]["Gelu"] == coverage["ops"]["Gelu"] > 0
    assert report["CoreML MLProgram"]["takes"] == report["CoreML MLProgram"]["total"]
    assert coverage["layout_transposes"] == coverage["ops"].get("Transpose", 0)
    assert any(note.startswith("NNAPI ") and "CoreML MLProgram whole" in note for note in artifact.notes)
