"""--eval-dir: labeled images, task accuracy of model and artifact, and the accuracy gate of quantized modes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fat_deploy.common.evaluation import accuracy, class_map, load_eval_set
from fat_deploy.errors import FatDeployError
from fat_deploy.exporters import export
from fat_deploy.models import get_spec


def image_folder(root: Path, classes: dict[str, int]) -> Path:
    """``classes`` subfolders with that many small random images each."""
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_accuracy_counts_top1_and_top5() -> None:
    logits = np.array([[0, 5, 1, 2, 3, 4, -1], [9, 0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5, 6.0]])
    assert accuracy(logits, np.array([1, 6, 0])) == {"top1": pytest.approx(33.333), "top5": pytest.approx(66.667)}


def test_folders_map_by_labels_indices_or_a_mapping_file(tmp_path: Path) -> None:
    root = image_folder(tmp_path / "eval", {"cat": 1, "dog": 2})
    assert class_map(root, ["dog", "cat", "fish"], 3, None) == {"cat": 1, "dog": 0}
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"cat": 2, "dog": 1}))
    assert class_map(root, ["a", "b", "c"], 3, mapping) == {"cat": 2, "dog": 1}
    numbered = image_folder(tmp_path / "numbered", {"0": 1, "7": 1})
    assert class_map(numbered, [str(i) for i in range(10)], 10, None) == {"0": 0, "7": 7}
    loaded = load_eval_set(root, get_spec("fat_b0"), (64, 64), ["dog", "cat"], 2)
    assert loaded.inputs.shape == (3, 3, 64, 64) and sorted(loaded.targets.tolist()) == [0, 0, 1]


@pytest.mark.parametrize(("setup", "message"), [
    (lambda root: root, "not found"),
    (lambda root: (root.mkdir(), root)[1], "has no class subfolders"),
    (lambda root: image_folder(root, {"zebra": 1}), "class folder 'zebra' is not in the labels or class indices"),
    (lambda root: image_folder(root, {"cat": 0}), "no images in"),
    (lambda root: (image_folder(root, {"cat": 1}), (root / "cat" / "bad.png").write_text("x"), root)[2],
     "1 of 2 images in .* cannot be read: bad.png"),
])
def test_unusable_eval_folders_are_refused_before_any_work(tmp_path: Path, setup, message: str) -> None:  # type: ignore[no-untyped-def]
    root = setup(tmp_path / "eval")
    out = tmp_path / "out"
    with pytest.raises(FatDeployError, match=message):
        export("fat_b0", "onnx", out=out, labels=["cat", "dog"] + [f"c{i}" for i in range(998)], eval_dir=root)
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".")]


def test_eval_options_need_eval_dir_and_a_sane_drop(tmp_path: Path) -> None:
    with pytest.raises(FatDeployError, match="need --eval-dir"):
        export("fat_b0", "onnx", out=tmp_path, max_accuracy_drop=1.0)
    root = image_folder(tmp_path / "eval", {"3": 1})
    with pytest.raises(FatDeployError, match="must be >= 0 points"):
        export("fat_b0", "onnx", out=tmp_path, eval_dir=root, max_accuracy_drop=-1.0)
    bad_map = tmp_path / "map.json"
    bad_map.write_text('["3"]')
    with pytest.raises(FatDeployError, match="must be a JSON object"):
        export("fat_b0", "onnx", out=tmp_path, eval_dir=root, eval_map=bad_map)
    bad_map.write_text('{"3": 5000}')
    with pytest.raises(FatDeployError, match="maps to class 5000, the model has 1000 classes"):
        export("fat_b0", "onnx", out=tmp_path, eval_dir=root, eval_map=bad_map)


def test_quantization_options_go_to_the_precisions_they_apply_to(tmp_path: Path) -> None:
    import argparse

    from fat_deploy.cli.export import _format_options, build_parser
    from fat_deploy.registry import get_format

    args = build_parser().parse_args(["--model", "fat_b0", "--precision", "fp32", "int8-static",
                                      "--calibration", str(tmp_path), "--keep-float", "head"])
    args.bundle = None
    onnx = get_format("onnx")
    assert _format_options(args, onnx, "fp32") == {}
    assert _format_options(args, onnx, "int8-static") == {"calibration": str(tmp_path), "keep_float": ["head"]}
    lone: argparse.Namespace = build_parser().parse_args(["--model", "fat_b0", "--precision", "fp32", "int8-dynamic",
                                                          "--calibration", str(tmp_path)])
    lone.bundle = None
    assert _format_options(lone, onnx, "fp32") == {"calibration": str(tmp_path)}  # no precision takes it: refused
