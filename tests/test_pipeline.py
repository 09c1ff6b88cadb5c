"""The export pipeline, placement, manifests, bundles, option flags and the harness, through the fake ``.npz``
runtime (tests/fake_runtime.py): what every runtime gets from the pipeline, tested in seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_runtime import DyingJob

from fat_deploy import export, measure, registry
from fat_deploy.cli.export import main as fat_export
from fat_deploy.common.files import sha256_of
from fat_deploy.contract.session import LoadRequest
from fat_deploy.environment import cache_root
from fat_deploy.errors import FatDeployError
from fat_deploy.exporters.bundle import INDEX
from fat_deploy.exporters.jobs import run_exports
from fat_deploy.exporters.manifest import validate_manifest
from fat_deploy.exporters.verification import Status

pytestmark = pytest.mark.usefixtures("fake_runtime")


def test_export_places_a_verified_file_and_its_manifest(tmp_path: Path, trained_looking_checkpoint: Path) -> None:
    artifact = export("fat_b0", "npz", out=tmp_path, img_size=64, checkpoint=trained_looking_checkpoint)
    assert artifact.status is Status.PASSED, artifact.error
    assert artifact.path == tmp_path / "fat_b0_npz_fp32.npz" and artifact.path.is_file()
    manifest = json.loads(artifact.manifest_path.read_text()) if artifact.manifest_path else {}
    assert validate_manifest(manifest) == []
    assert manifest["file"]["sha256"] == sha256_of(artifact.path)
    assert manifest["format_details"]["arrays"] > 100
    assert manifest["format_details"]["coverage"]["accelerators"][0]["name"] == "PyTorch"
    assert "fake runtime: weights stored as .npz" in artifact.notes
    assert artifact.comparison is not None and artifact.comparison["max_abs_diff"] < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fat_b0_npz_fp32.json", "fat_b0_npz_fp32.npz"]


def test_a_file_that_drifts_fails_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fmt = registry.get_format("npz")
    real = type(fmt).convert

    def drifting(self, request, path):  # type: ignore[no-untyped-def]
        with torch.no_grad():
            request.model.head.weight.mul_(1.5)
        return real(self, request, path)

    monkeypatch.setattr(type(fmt), "convert", drifting)
    artifact = export("fat_b0", "npz", out=tmp_path, img_size=64)
    assert artifact.status is Status.FAILED and artifact.path is None
    assert artifact.error and "verification outside tolerance" in artifact.error
    assert list(tmp_path.iterdir()) == []


def test_nothing_is_replaced_without_force(tmp_path: Path) -> None:
    first = export("fat_b0", "npz", out=tmp_path, img_size=64)
    assert first.path is not None
    before = first.path.read_bytes()
    with pytest.raises(FatDeployError, match="--force"):
        export("fat_b0", "npz", out=tmp_path, img_size=64)
    assert first.path.read_bytes() == before
    torch.manual_seed(1)
    second = export("fat_b0", "npz", out=tmp_path, img_size=64, force=True)
    assert second.path == first.path and second.path.read_bytes() != before


def test_options_are_checked_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(FatDeployError, match="refused, as asked"):
        export("fat_b0", "npz", out=tmp_path, img_size=64, note="refuse")
    with pytest.raises(FatDeployError, match="--nhwc is not supported for npz"):
        export("fat_b0", "npz", out=tmp_path, img_size=64, nhwc=True)
    with pytest.raises(FatDeployError, match="npz does not support precision int8-static"):
        export("fat_b0", "npz", "int8-static", out=tmp_path, img_size=64)
    with pytest.raises(FatDeployError, match="--npz-compress is not supported for onnx"):
        export("fat_b0", "onnx", out=tmp_path, img_size=64, compress=True)
    assert list(tmp_path.iterdir()) == []
    tagged = export("fat_b0", "npz", out=tmp_path, img_size=64, compress=True, note="kept")
    assert tagged.path is not None and tagged.path.name == "fat_b0_npz_fp32_z.npz"
    assert json.loads(tagged.path.with_suffix(".json").read_text())["format_details"]["note"] == "kept"


def test_cli_flags_come_from_the_runtime_declarations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        fat_export(["--help"])
    help_text = capsys.readouterr().out
    assert "--npz-compress" in help_text and "--npz-note" in help_text and "npz" in help_text
    code = fat_export(["--model", "fat_b0", "--format", "npz", "--img-size", "64", "--out", str(tmp_path),
                       "--npz-compress", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    (summary,) = json.loads(out.out)
    assert summary["status"] == "passed" and summary["path"].endswith("fat_b0_npz_fp32_z.npz")
    assert fat_export(["--model", "fat_b0", "--format", "npz", "--npz-note", "refuse", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused, as asked" in err


def test_jobs_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert fat_export(["--model", "fat_b0", "--format", "npz", "--jobs", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--jobs must be at least 1, got 0" in err and not list(tmp_path.iterdir())


def test_a_worker_process_that_dies_fails_its_export_in_one_line(tmp_path: Path) -> None:
    jobs = [DyingJob("fat_b0", "onnx", "fp32", tmp_path), DyingJob("fat_b0", "tflite", "fp32", tmp_path)]
    finished: list[int] = []
    artifacts = run_exports(jobs, 2, lambda index, message: None, lambda index, artifact: finished.append(index))
    assert sorted(finished) == [0, 1] and [a.status for a in artifacts] == [Status.FAILED, Status.FAILED]
    assert all(a.error and "worker process died" in a.error and "\n" not in a.error for a in artifacts)
    assert [a.format for a in artifacts] == ["onnx", "tflite"] and list(tmp_path.iterdir()) == []


def test_bundle_folder_gets_the_file_labels_and_guide(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "app"
    code = fat_export(["--model", "fat_b0", "--format", "npz", "--img-size", "64", "--bundle", str(bundle)])
    assert code == 0, capsys.readouterr().err
    assert set(json.loads((bundle / INDEX).read_text())["platforms"]) == {"web"}
    files = {p.name for p in (bundle / "web").iterdir()}
    assert {"fat_b0_npz_fp32.npz", "fat_b0_npz_fp32.json", "labels.txt", "README.md"} <= files
    assert "rebuild `fat_b0` and load the arrays" in (bundle / "web" / "README.md").read_text()


def test_harness_exports_through_the_pipeline_and_times_the_file(tmp_path: Path) -> None:
    record = measure("fat_b0", "fake-npz", img_size=64, warmup=1, runs=3, cache_dir=tmp_path)
    assert record.status == "ok", record.reason
    assert record.artifact and record.artifact.endswith("fat_b0_npz_fp32.npz")
    assert record.stats and record.stats["runs"] >= 3 and record.stats["median_ms"] > 0
    again = measure("fat_b0", "fake-npz", img_size=64, warmup=1, runs=3, cache_dir=tmp_path)
    assert again.artifact_sha256 == record.artifact_sha256  # the cached, verified file is reused


def test_harness_cache_follows_the_cache_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --cache-dir the timed exports go under $FAT_DEPLOY_CACHE, else $XDG_CACHE_HOME/fat-deploy (where the test
    bed and the ARM64 root live too), else ~/.cache/fat-deploy."""
    monkeypatch.delenv("FAT_DEPLOY_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "fat-deploy"
    record = measure("fat_b0", "fake-npz", img_size=64, warmup=1, runs=3)
    assert record.artifact and Path(record.artifact).is_relative_to(tmp_path / "xdg" / "fat-deploy")
    monkeypatch.setenv("FAT_DEPLOY_CACHE", str(tmp_path / "own"))
    record = measure("fat_b0", "fake-npz", img_size=64, warmup=1, runs=3)
    assert record.artifact and Path(record.artifact).is_relative_to(tmp_path / "own")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "fat-deploy"


def test_the_fake_file_runs_in_its_backend_as_pytorch_does(tmp_path: Path, fat_b0: torch.nn.Module) -> None:
    artifact = export(fat_b0, "npz", out=tmp_path, img_size=64, model_name="fat_b0")
    assert artifact.path is not None
    runner = registry.get_backend("fake-npz").load(
        LoadRequest(model_name="fat_b0", model=None, artifact=artifact.path, batch=2, img_size=(64, 64),
                             threads=1))
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = fat_b0(torch.from_numpy(x)).numpy()
    assert np.abs(runner.logits(runner.prepare(x)) - expected).max() < 1e-4


@pytest.fixture(scope="module")
def self_labeled_eval_dir(tmp_path_factory: pytest.TempPathFactory, trained_looking_checkpoint: Path) -> Path:
    """120 patches of the sample photos, each filed under the class the float model (trained-looking checkpoint, 64
    px) gives it: the reference scores 100%, so what quantization flips is the whole drop."""
    from fat_deploy.common.calibration import preprocess, sample_photos
    from fat_deploy.models import create_model, get_spec

    folder = tmp_path_factory.mktemp("self_labeled")
    model = create_model("fat_b0", checkpoint=trained_looking_checkpoint).eval()
    rng = np.random.default_rng(0)
    photos = [image for _, image in sample_photos()]
    for index in range(120):
        photo = photos[index % len(photos)]
        side = int(min(photo.size) * rng.uniform(0.3, 0.6))
        x, y = (int(rng.integers(0, extent - side + 1)) for extent in photo.size)
        patch = photo.crop((x, y, x + side, y + side)).resize((80, 80))
        with torch.no_grad():
            label = int(model(torch.from_numpy(preprocess(patch, get_spec("fat_b0"), (64, 64))[None])).argmax())
        (folder / str(label)).mkdir(exist_ok=True)
        patch.save(folder / str(label) / f"{index:03d}.png")
    return folder


def test_a_drop_over_the_limit_is_searched_away_by_keeping_the_worst_layers_float(
        tmp_path: Path, trained_looking_checkpoint: Path, self_labeled_eval_dir: Path) -> None:
    common = dict(out=tmp_path, img_size=64, checkpoint=trained_looking_checkpoint, eval_dir=self_labeled_eval_dir)
    refused = export("fat_b0", "npz", "int8-weights", **common, accuracy_search=False)  # type: ignore[arg-type]
    assert refused.status == Status.FAILED and "drops" in str(refused.error) and "accuracy search" not in str(refused.error)
    assert not list(tmp_path.iterdir())

    artifact = export("fat_b0", "npz", "int8-weights", **common)  # type: ignore[arg-type]
    assert artifact.status == Status.PASSED, artifact.error
    assert any(note.startswith("accuracy search: kept 1 layer(s) float: head;") for note in artifact.notes)
    manifest = json.loads(artifact.manifest_path.read_text())  # type: ignore[union-attr]
    search = manifest["format_details"]["accuracy_search"]
    assert search["kept_float"] == ["head"] and search["ranking_head"] == ["head", "layers.3.blocks.1.ffn.fc2"]
    first, last = search["steps"]
    assert first["kept_float"] == 0 and not first["passed"] and first["top1_drop_points"] > 1.0
    assert last == {**last, "kept_float": 1, "passed": True} and last["top1_drop_points"] <= 1.0
    assert manifest["verification"]["accuracy"]["top1_drop_points"] == last["top1_drop_points"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fat_b0_npz_int8-weights.json", "fat_b0_npz_int8-weights.npz"]


def test_a_search_that_cannot_hold_fails_and_leaves_nothing(
        tmp_path: Path, trained_looking_checkpoint: Path, self_labeled_eval_dir: Path) -> None:
    artifact = export("fat_b0", "npz", "int8-weights", out=tmp_path, img_size=64, checkpoint=trained_looking_checkpoint,
                      eval_dir=self_labeled_eval_dir, note="rank-backwards")  # the harmless layer ranked worst
    assert artifact.status == Status.FAILED
    assert "accuracy search: no step held (1 tried, up to 1 layer(s) float;" in str(artifact.error)
    assert not list(tmp_path.iterdir())
    with pytest.raises(FatDeployError, match="--no-accuracy-search needs --eval-dir"):
        export("fat_b0", "npz", "int8-weights", out=tmp_path, img_size=64, accuracy_search=False)
