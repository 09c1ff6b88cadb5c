"""What a demanding user tried: files lost or mismatched, silent checkpoints, tracebacks, ignored inputs.

One test (or more) per item of the reliability issue; names say which.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from fat_deploy.cli.export import main as fat_export
from fat_deploy.cli.latency import main as fat_latency
from fat_deploy.common.files import sha256_of
from fat_deploy.errors import ArgumentError, CheckpointError, FatDeployError
from fat_deploy.exporters import export
from fat_deploy.exporters.placement import (
    STAGING_MARKER,
    STAGING_MARKER_TEXT,
    PlacementError,
    check_targets,
    place_pair,
    remove_stale_staging,
)
from fat_deploy.latency.harness import measure
from fat_deploy.latency.report import read_jsonl
from fat_deploy.models import create_model
from fat_deploy.registry import get_format, list_formats

COREML = get_format("coreml")


def cli_error(capsys: pytest.CaptureFixture[str], main, *argv: str) -> str:  # type: ignore[no-untyped-def]
    """The one error line of a refused command (exit 2, no traceback)."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if ": error: " in line]
    return line


@pytest.fixture(scope="module")
def onnx_b0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(123)  # other weights than the seeded tests' (a different file)
    artifact = export("fat_b0", "onnx", out=tmp_path_factory.mktemp("b0"), img_size=64)
    assert artifact.path is not None, artifact.error
    return artifact.path


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------ Core ML with a trained-looking checkpoint


@pytest.mark.slow
def test_every_format_exports_a_trained_looking_checkpoint(trained_exports: dict[str, Any]) -> None:
    # coremltools turns an unfoldable per-channel scale and shift into batch_norm: a core op, not a problem.
    records = trained_exports
    assert set(records) == set(list_formats())
    assert {records[name]["status"] for name in ("onnx", "tflite", "executorch", "ort", "openvino", "mnn")} == {"passed"}
    assert records["coreml"]["status"] == "exported-not-verified", records["coreml"]["error"]
    manifest = json.loads(Path(records["coreml"]["manifest"]).read_text())
    assert manifest["verification"]["structure_problems"] == []
    assert manifest["format_details"]["ops"].get("batch_norm", 0) >= 1  # the op the old allow-list refused


def test_coreml_op_check_is_about_the_deployment_target() -> None:
    from fat_deploy.runtimes.coreml.converter import ops_unavailable_on

    assert ops_unavailable_on({"conv", "batch_norm", "layer_norm", "gelu"}, "iOS15") == []
    # int4 block-wise weights exist from iOS18 on: an iOS16 program holding them would not load.
    assert ops_unavailable_on({"conv", "constexpr_blockwise_shift_scale"}, "iOS16") == ["constexpr_blockwise_shift_scale"]
    assert ops_unavailable_on({"my_custom_op"}, "iOS18") == ["my_custom_op"]


# ------------------------------------------------------------ 1. concurrent runs into the same folder


def test_artifact_appearing_during_export_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fmt = get_format("onnx")
    target = tmp_path / "fat_b0_onnx_fp32.onnx"
    convert = type(fmt).convert

    def convert_while_another_run_finishes(self, request, path):  # type: ignore[no-untyped-def]
        details = convert(self, request, path)
        target.write_bytes(b"the other run's artifact")
        return details

    monkeypatch.setattr(type(fmt), "convert", convert_while_another_run_finishes)
    with pytest.raises(PlacementError, match="appeared or changed while this export ran"):
        export("fat_b0", "onnx", out=tmp_path, img_size=64)
    assert target.read_bytes() == b"the other run's artifact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fat_b0_onnx_fp32.onnx"]  # no manifest, no staging


def test_two_real_concurrent_exports_never_both_place(tmp_path: Path) -> None:
    script = ("import sys, json; from fat_deploy.cli.export import main; "
              "sys.exit(main(['--model', 'fat_b0', '--format', 'onnx', '--img-size', '64', '--out', sys.argv[1], "
              "'--json']))")
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=600), run.stdout.read(), run.stderr.read()) for run in runs]  # type: ignore[union-attr]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results  # one placed it; the other refused (up front, or at placement)
    (placed,) = [json.loads(out)[0] for code, out, _ in results if code == 0]
    manifest = json.loads((tmp_path / "fat_b0_onnx_fp32.json").read_text())
    assert manifest["file"]["sha256"] == sha256_of(Path(placed["path"]))
    assert hidden(tmp_path) == []


# ------------------------------------------------------------ 2, 3, 7. what is at the target paths


def test_file_at_manifest_path_is_not_overwritten(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    notes = tmp_path / "fat_b0_onnx_fp32.json"
    notes.write_text("user's notes")
    line = cli_error(capsys, fat_export, "--model", "fat_b0", "--format", "onnx", "--out", str(tmp_path))
    assert "fat_b0_onnx_fp32.json already exists; pass --force" in line
    assert notes.read_text() == "user's notes"


def test_folder_at_manifest_path_is_refused_even_with_force(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "fat_b0_onnx_fp32.json").mkdir()
    line = cli_error(capsys, fat_export, "--model", "fat_b0", "--format", "onnx", "--out", str(tmp_path), "--force")
    assert "is a folder that is not a previous manifest" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fat_b0_onnx_fp32.json"]


def test_pair_is_placed_together_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    staging = tmp_path / ".stage"
    staging.mkdir()
    (staging / "m.onnx").write_bytes(b"new artifact")
    (staging / "m.json").write_text("{}")
    (tmp_path / "m.onnx").write_bytes(b"old artifact")
    targets = check_targets(tmp_path / "m.onnx", tmp_path / "m.json", force=True, is_artifact=Path.is_file)
    real_replace = os.replace

    def failing_replace(source, target):  # type: ignore[no-untyped-def]
        if str(target).endswith("m.json"):
            raise OSError(28, "No space left on device")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(PlacementError, match="No space left on device; nothing was changed"):
        place_pair(staging / "m.onnx", staging / "m.json", targets)
    monkeypatch.setattr(os, "replace", real_replace)
    assert (tmp_path / "m.onnx").read_bytes() == b"old artifact"
    assert not (tmp_path / "m.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".stage", "m.onnx"]


def test_force_never_deletes_a_users_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = tmp_path / "fat_b0_onnx_fp32.onnx"
    folder.mkdir()
    (folder / "thesis.tex").write_text("precious")
    line = cli_error(capsys, fat_export, "--model", "fat_b0", "--format", "onnx", "--out", str(tmp_path), "--force")
    assert "is a folder that is not a previous artifact" in line and "fat-export will not delete it" in line
    assert (folder / "thesis.tex").read_text() == "precious"


def coreml_package(folder: Path) -> Path:
    """What coremltools writes: the package manifest and the model under Data/com.apple.CoreML/."""
    package = folder / "fat_b0_coreml_fp32.mlpackage"
    data = package / "Data" / "com.apple.CoreML"
    (data / "weights").mkdir(parents=True)
    (data / "model.mlmodel").write_bytes(b"spec")
    (data / "weights" / "weight.bin").write_bytes(b"\0" * 64)
    (package / "Manifest.json").write_text(json.dumps({
        "fileFormatVersion": "1.0.0", "rootModelIdentifier": "m",
        "itemInfoEntries": {"m": {"path": "com.apple.CoreML/model.mlmodel"}, "w": {"path": "com.apple.CoreML/weights"}}}))
    return package


def test_previous_coreml_package_may_be_replaced_with_force(tmp_path: Path) -> None:
    package = coreml_package(tmp_path)
    check_targets(package, tmp_path / "fat_b0_coreml_fp32.json", force=True, is_artifact=COREML.is_artifact)
    with pytest.raises(PlacementError, match="already exists"):
        check_targets(package, tmp_path / "fat_b0_coreml_fp32.json", force=False, is_artifact=COREML.is_artifact)


def test_force_never_deletes_a_folder_that_only_looks_like_a_package(tmp_path: Path) -> None:
    fake = tmp_path / "fake" / "fat_b0_coreml_fp32.mlpackage"
    fake.mkdir(parents=True)
    (fake / "Manifest.json").write_text("{}")  # any Manifest.json used to be enough
    (fake / "precious.txt").write_text("mine")
    added = coreml_package(tmp_path / "added")
    (added / "precious.txt").write_text("mine")  # a real package with a user's file beside the model
    linked = coreml_package(tmp_path / "linked")
    (linked / "Data" / "com.apple.CoreML" / "notes").symlink_to(tmp_path / "added" / added.name / "precious.txt")
    for package in (fake, added, linked):
        with pytest.raises(PlacementError, match="holds files the format does not write"):
            check_targets(package, package.with_suffix(".json"), force=True, is_artifact=COREML.is_artifact)
    assert (fake / "precious.txt").read_text() == (added / "precious.txt").read_text() == "mine"


def test_dangling_symlink_at_artifact_path_needs_force(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    link = tmp_path / "fat_b0_onnx_fp32.onnx"
    link.symlink_to(tmp_path / "nowhere")
    line = cli_error(capsys, fat_export, "--model", "fat_b0", "--format", "onnx", "--out", str(tmp_path))
    assert "is a dangling symlink; pass --force" in line
    assert link.is_symlink()


# ------------------------------------------------------------ 6. staging folders left by killed runs


def test_stale_staging_is_removed_but_a_live_one_and_a_users_folder_are_kept(tmp_path: Path) -> None:
    stale, live = tmp_path / ".fat-export-killed", tmp_path / ".fat-export-live"
    for folder in (stale, live):  # what staging_folder() makes: a folder with fat-export's marker
        folder.mkdir()
        (folder / STAGING_MARKER).write_text(STAGING_MARKER_TEXT)
    (stale / "fat_b0_onnx_fp32.onnx").write_bytes(b"\0" * 1000)
    notes = tmp_path / ".fat-export-my-notes"  # a user's folder that only shares the prefix
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    forged = tmp_path / ".fat-export-forged"
    forged.mkdir()
    (forged / STAGING_MARKER).write_text("not ours")
    holder = os.open(live, os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_EX)  # what a running export holds
    try:
        assert remove_stale_staging(tmp_path) == [".fat-export-killed"]
        assert live.is_dir() and not stale.exists()
        assert (notes / "notes.txt").read_text() == "mine" and forged.is_dir()
    finally:
        os.close(holder)


def test_staging_left_by_sigkill_is_cleaned_by_the_next_export(tmp_path: Path) -> None:
    script = ("import os, signal, sys; from fat_deploy import registry; from fat_deploy.exporters import export\n"
              "fmt = registry.get_format('onnx'); real = type(fmt).convert\n"
              "def convert(self, request, path):\n"
              "    real(self, request, path); os.kill(os.getpid(), signal.SIGKILL)\n"
              "type(fmt).convert = convert\n"
              "export('fat_b0', 'onnx', out=sys.argv[1], img_size=64)\n")
    code = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, timeout=600).returncode
    assert code == -9
    (left,) = hidden(tmp_path)
    assert left.startswith(".fat-export-") and any((tmp_path / left).iterdir())  # the unverified file
    artifact = export("fat_b0", "onnx", out=tmp_path, img_size=64)
    assert artifact.status == "passed"
    assert hidden(tmp_path) == []


# ------------------------------------------------------------ 4, 5. the latency cache and --artifact


@pytest.mark.slow
def test_latency_cache_re_exports_a_damaged_or_swapped_file(tmp_path: Path, onnx_b0: Path) -> None:
    first = measure("fat_b0", "onnxruntime", img_size=64, runs=2, warmup=0, cache_dir=tmp_path)
    cached = Path(first.artifact)  # type: ignore[arg-type]
    good_sha = first.artifact_sha256
    cached.write_bytes(cached.read_bytes()[:1000])  # truncated
    again = measure("fat_b0", "onnxruntime", img_size=64, runs=2, warmup=0, cache_dir=tmp_path)
    assert again.status == "ok" and again.artifact == str(cached)
    manifest = json.loads(cached.with_suffix(".json").read_text())
    assert again.artifact_sha256 == manifest["file"]["sha256"] == sha256_of(cached)
    shutil.copyfile(onnx_b0, cached)  # swapped for another model's file (a different sha256)
    assert sha256_of(cached) != manifest["file"]["sha256"]
    third = measure("fat_b0", "onnxruntime", img_size=64, runs=2, warmup=0, cache_dir=tmp_path)
    assert third.artifact_sha256 == json.loads(cached.with_suffix(".json").read_text())["file"]["sha256"]
    assert good_sha and len(good_sha) == 64


def test_cache_is_keyed_by_what_produced_the_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fat_deploy.latency import harness

    harness.producer_key.cache_clear()
    key = harness.producer_key()
    monkeypatch.setattr(harness, "recorded_versions", lambda: {"onnxruntime": "99.0"})
    harness.producer_key.cache_clear()
    try:
        assert harness.producer_key() != key
    finally:
        monkeypatch.undo()
        harness.producer_key.cache_clear()


def test_artifact_of_another_model_is_refused(capsys: pytest.CaptureFixture[str], onnx_b0: Path) -> None:
    line = cli_error(capsys, fat_latency, "--model", "fat_b1", "--backend", "onnxruntime", "--artifact", str(onnx_b0))
    assert "was exported with model 'fat_b0', not 'fat_b1'" in line


def test_artifact_changed_since_export_is_refused(tmp_path: Path, onnx_b0: Path) -> None:
    copy = tmp_path / onnx_b0.name
    shutil.copyfile(onnx_b0, copy)
    shutil.copyfile(onnx_b0.with_suffix(".json"), copy.with_suffix(".json"))
    with copy.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(FatDeployError, match="not the file its manifest .* describes"):
        measure("fat_b0", "onnxruntime", img_size=64, artifact=copy, runs=1)


def test_artifact_without_manifest_is_timed_with_a_caveat(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, onnx_b0: Path
) -> None:
    bare = tmp_path / "model.onnx"
    shutil.copyfile(onnx_b0, bare)
    results = tmp_path / "r.jsonl"
    code = fat_latency(["--model", "fat_b0", "--backend", "onnxruntime", "--artifact", str(bare), "--img-size", "64",
                        "--runs", "2", "--warmup", "0", "--json", str(results)])
    assert code == 0
    assert "fat-latency: warning: artifact identity unchecked: no manifest" in capsys.readouterr().err
    (record,) = read_jsonl([results])
    assert "identity unchecked" in record["note"]


# ------------------------------------------------------------ 8. checkpoints that are silently wrong


def test_integer_weights_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = create_model("fat_b0").state_dict()
    for dtype in (torch.int32, torch.bool):
        path = tmp_path / f"w_{dtype}.safetensors".replace("torch.", "")
        save_file({k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in state.items()}, path)
        with pytest.raises(CheckpointError, match=r"non-floating weights for \d+ floating parameters"):
            create_model("fat_b0", checkpoint=path)


def test_half_precision_weights_are_upcast_and_recorded(tmp_path: Path, trained_looking_checkpoint: Path) -> None:
    from safetensors.torch import save_file

    state = torch.load(trained_looking_checkpoint, weights_only=True)
    path = tmp_path / "half.safetensors"
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}, path)
    artifact = export("fat_b0", "onnx", out=tmp_path / "out", checkpoint=path, img_size=64)
    assert artifact.status == "passed", artifact.error
    checkpoint = json.loads(artifact.manifest_path.read_text())["checkpoint"]  # type: ignore[union-attr]
    assert checkpoint["upcast_from"] == ["float16"] and checkpoint["upcast_to"] == "float32"


# ------------------------------------------------------------ 9-13. errors that were tracebacks or exit 0


def _record(**changes: object) -> str:
    record = {"model": "fat_b0", "backend": "onnxruntime", "device": "cpu", "precision": "fp32", "batch": 1,
              "img_size": [224, 224], "threads": 1, "status": "ok", "stats": {"median_ms": 10.0},
              "environment": {"cpu": "x"}, "timed": "t", "created": "now"}
    return json.dumps({**record, **changes})


@pytest.mark.parametrize("changes,message", [
    ({"stats": "fast"}, "stats must be an object"),
    ({"environment": ["x"]}, "environment must be an object"),
    ({"stats": {"median_ms": "10"}}, "stats.median_ms must be a number"),
    ({"img_size": "abc"}, r"img_size must be \[height, width\]"),
    ({"batch": "1"}, "batch must be a positive integer"),
    ({"status": "great"}, "status must be one of"),
])
def test_merge_validates_records(capsys: pytest.CaptureFixture[str], tmp_path: Path, changes, message) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "r.jsonl"
    path.write_text(_record() + "\n" + _record(**changes) + "\n")
    line = cli_error(capsys, fat_latency, "--merge", str(path))
    assert f"{path}:2: not a valid fat-latency record" in line
    assert message.split("\\")[0] in line or __import__("re").search(message, line)


def test_merge_of_an_empty_file_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    assert "no fat-latency records in" in cli_error(capsys, fat_latency, "--merge", str(path))


def test_merge_of_a_file_that_is_not_utf8_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"model": "caf\xe9"}\n')  # issue 25, item 13: was a 24-line UnicodeDecodeError traceback
    line = cli_error(capsys, fat_latency, "--merge", str(path))
    assert f"{path}: not a fat-latency results file (not UTF-8 text: byte 14 is 0xe9)" in line


def test_unwritable_system_folder(capsys: pytest.CaptureFixture[str]) -> None:
    if not Path("/sys/kernel").is_dir():
        pytest.skip("no /sys/kernel here")
    line = cli_error(capsys, fat_export, "--model", "fat_b0", "--out", "/sys/kernel")
    assert "cannot create output folder /sys/kernel" in line


def test_unknown_device_is_an_error_and_absent_known_device_a_row(capsys: pytest.CaptureFixture[str]) -> None:
    assert "unknown device 'tpu'" in cli_error(capsys, fat_latency, "--model", "fat_b0", "--device", "tpu")
    if not torch.cuda.is_available():
        record = measure("fat_b0", "torch", device="cuda", img_size=64, runs=1)
        assert record.status == "unavailable" and "no CUDA device" in str(record.reason)


@pytest.mark.parametrize("call,message", [
    (lambda: export("fat_b0", ["onnx"]), "format must be a string"),  # type: ignore[arg-type]
    (lambda: export("fat_b0", "onnx", img_size=224.5), "img_size must be an integer"),  # type: ignore[arg-type]
    (lambda: export("fat_b0", "onnx", batch="1"), "batch must be an integer"),  # type: ignore[arg-type]
    (lambda: export("fat_b0", "onnx", checkpoint=123), "checkpoint must be a path"),  # type: ignore[arg-type]
    (lambda: export("fat_b0", "onnx", keep_float="head"), "keep_float must be a list of strings"),  # type: ignore[arg-type]
    (lambda: export(42, "onnx"), "model_or_name must be"),  # type: ignore[arg-type]
    (lambda: measure("fat_b0", "torch", threads="2"), "--threads must be an integer"),  # type: ignore[arg-type]
    (lambda: measure("fat_b0", "torch", img_size=(64.0, 64)), "img_size must be an integer"),  # type: ignore[arg-type]
    (lambda: measure(None, "torch"), "model must be a string"),  # type: ignore[arg-type]
])
def test_python_api_validates_arguments(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ArgumentError, match=message):
        call()


def test_more_threads_than_cores_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    line = cli_error(capsys, fat_latency, "--model", "fat_b0", "--backend", "torch", "--threads", "9999")
    assert "--threads 9999 is more than the" in line and "core(s) available here" in line


# ------------------------------------------------------------ 14. inputs that were silently ignored


def test_calibration_size_zero_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    line = cli_error(capsys, fat_export, "--model", "fat_b0", "--precision", "int8-static", "--calibration-size", "0",
                     "--out", str(tmp_path))
    assert "--calibration-size must be at least 1, got 0" in line


def test_unreadable_calibration_image_is_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "calib"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(folder / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    line = cli_error(capsys, fat_export, "--model", "fat_b0", "--precision", "int8-static", "--calibration",
                     str(folder), "--out", str(tmp_path / "out"))
    assert "1 of 6 images in" in line and "broken.jpg (not an image PIL can decode)" in line


def test_calibration_file_is_not_a_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    image = tmp_path / "one.png"
    image.write_bytes(b"x")
    line = cli_error(capsys, fat_export, "--model", "fat_b0", "--precision", "int8-static", "--calibration",
                     str(image), "--out", str(tmp_path / "out"))
    assert "is a file; give a folder of images" in line


def test_small_calibration_folder_warns_on_the_terminal(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from PIL import Image

    from fat_deploy.cli.common import run_cli
    from fat_deploy.exporters.api import check_calibration_folder

    folder = tmp_path / "calib"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "only.png")
    assert run_cli(lambda argv: check_calibration_folder(folder) or 0, [], "fat-export") == 0
    assert "fat-export: warning: --calibration" in capsys.readouterr().err


def test_keep_float_pattern_that_matches_nothing_is_refused(tmp_path: Path, trained_looking_checkpoint: Path) -> None:
    with pytest.raises(FatDeployError, match="--keep-float no_such_layer matches no node of the ONNX graph"):
        export("fat_b0", "onnx", "int8-dynamic", out=tmp_path, img_size=64, keep_float=["head", "no_such_layer"],
               checkpoint=trained_looking_checkpoint)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_keep_float_pattern_that_matches_nothing_is_refused_tflite(tmp_path: Path) -> None:
    with pytest.raises(FatDeployError, match="--keep-float nope matches no tensor of the TFLite graph"):
        export("fat_b0", "tflite", "int8-dynamic", out=tmp_path, img_size=64, keep_float=["nope"])
    assert list(tmp_path.iterdir()) == []


def test_duplicate_labels_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["cat", "dog", *[f"c{i}" for i in range(997)], "cat"]))
    line = cli_error(capsys, fat_export, "--model", "fat_b0", "--labels", str(labels), "--out", str(tmp_path / "o"))
    assert "repeats labels ('cat')" in line


def test_labels_are_recorded_for_every_format(tmp_path: Path) -> None:
    labels = [f"class {i}" for i in range(1000)]
    artifact = export("fat_b0", "onnx", out=tmp_path, img_size=64, labels=labels)
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    assert manifest["labels"]["names"] == labels and manifest["labels"]["count"] == 1000
    assert manifest["preprocessing"]["resize_shorter_side"] == 73  # floor(64 / 0.875), not a full-photo crop
    import onnx

    metadata = {p.key: p.value for p in onnx.load(str(artifact.path)).metadata_props}
    assert json.loads(metadata["labels"]) == labels  # a plain .onnx names its classes too (README's claim)


# ------------------------------------------------------------ 15. messages


def test_look_alike_model_name_is_suggested_first(capsys: pytest.CaptureFixture[str]) -> None:
    assert "did you mean fat_b0," in cli_error(capsys, fat_export, "--model", "fat_bo")


def test_truncated_checkpoint_message_is_whole(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save(create_model("fat_b0").state_dict(), good)
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError) as info:
        create_model("fat_b0", checkpoint=bad)
    message = str(info.value)
    assert message.endswith(")") and "..." not in message and "\n" not in message
    assert "failed finding central directory" in message


def test_no_torch_warning_before_a_pickle_refusal(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    script = ("import os, torch\nclass P:\n    def __reduce__(self):\n        return (os.system, ('true',))\n"
              f"torch.save({{'model': {{'w': torch.zeros(1)}}, 'x': P()}}, {str(path)!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError, match="refusing checkpoint"):
            create_model("fat_b0", checkpoint=path)
    assert [str(w.message) for w in caught] == []



# ------------------------------------------------------------ quiet by default


@pytest.mark.slow
def test_converters_are_quiet_unless_verbose(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "fat_deploy.cli.export", "--model", "fat_b0", "--format", "coreml",
               "--img-size", "64", "--out", str(tmp_path / "quiet")]
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    quiet_run = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert quiet_run.returncode == 0, quiet_run.stderr
    lines = [line.strip() for line in quiet_run.stderr.splitlines() if line.strip()]
    assert lines and all(line.startswith("fat_b0 → coreml") for line in lines), lines  # our progress only
    assert "exported-not-verified" in quiet_run.stdout  # the summary
    verbose_run = subprocess.run([*command[:-1], str(tmp_path / "verbose"), "--verbose"], capture_output=True,
                                 text=True, timeout=600, env=env)
    assert verbose_run.returncode == 0
    assert "Running MIL" in verbose_run.stderr  # coremltools' own progress, shown on request
