"""Float16 arithmetic as devices compute it (fat_deploy.common.fp16) and the float16-safe norm rewrite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fat_deploy import export
from fat_deploy.common.calibration import verification_inputs
from fat_deploy.common.fp16 import HALF_MAX, Arithmetic, check_fp16, sequential_dot, to_half, tree_sum
from fat_deploy.common.verify import TOLERANCES
from fat_deploy.exporters.verification import Status
from fat_deploy.models import create_model, get_spec, to_deploy
from fat_deploy.models.deploy import litert_form
from fat_deploy.models.float16_norms import scale_norms_for_float16
from fat_deploy.models.synthetic import randomize_norm_stats
from fat_deploy.precision import Precision

FP16 = TOLERANCES[Precision.FP16]


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    inputs, _ = verification_inputs(get_spec("fat_b0"), (224, 224), photos=2, random=1)
    return inputs


def test_tree_sum_rounds_every_partial_sum_and_overflows_like_float16() -> None:
    ones = torch.ones(1, 4096)
    total, peak = tree_sum(ones, [1])
    assert float(total) == 4096.0 and peak == 4096.0
    squares = torch.full((1, 100_352), 0.9)  # FAT-B0 stage 1 at 224 px: C*H*W values, mean square 0.81
    total, _ = tree_sum(squares * squares, [1])
    assert torch.isinf(total).all(), "100,352 squares of 0.9 sum past 65504"


@pytest.mark.parametrize(("left", "right"),
                         [((1, 2, 8, 27), (3, 2, 27, 50)), ((4, 1, 9), (4, 9, 1)), ((2, 5, 0), (2, 0, 4))])
def test_sequential_dot_rounds_after_every_multiply_add_in_order(left: tuple[int, ...], right: tuple[int, ...]) -> None:
    """The in-place accumulation equals the definition bit for bit: a float32 multiply-add, then float16 rounding,
    one reduction step at a time; the peak is the largest accumulator magnitude any step reached."""
    torch.manual_seed(0)
    a, b = to_half(torch.randn(left) * 40), to_half(torch.randn(right) * 40)
    expected = torch.zeros(torch.broadcast_shapes((*left[:-1], 1), (*right[:-2], 1, right[-1])))
    peak = 0.0
    for k in range(left[-1]):
        expected = to_half(expected + a[..., k:k + 1] * b[..., k:k + 1, :])
        peak = max(peak, float(expected.abs().max()))
    product, reached = sequential_dot(a, b)
    assert torch.equal(product, expected) and reached == peak
    if left[-1]:
        assert product.dtype == torch.float32 and torch.equal(product, to_half(product))  # float16 values


def test_sequential_dot_overflows_to_inf_like_float16() -> None:
    product, peak = sequential_dot(torch.full((1, 3), 200.0), torch.full((3, 1), 200.0))  # 40,000 then 80,000
    assert torch.isinf(product).all() and peak == float("inf")


def test_fat_norms_overflow_in_float16_accumulation_until_rewritten_exactly(photos: np.ndarray) -> None:
    torch.manual_seed(0)
    deployed = to_deploy(randomize_norm_stats(create_model("fat_b0")))
    before = check_fp16(deployed, photos, FP16, accumulation_inputs=1)
    storage, accumulation = before.results
    assert storage.arithmetic == Arithmetic.STORAGE and storage.overflow is None and not storage.failures
    assert accumulation.overflow is not None and "native_layer_norm" in accumulation.overflow
    assert accumulation.overflow.startswith("layers.0.blocks.0")  # the first LayerNorm over (C, H, W)
    assert accumulation.comparison.max_abs_rel > FP16.max_abs_rel, "the overflow is absorbed: finite, but wrong"

    with torch.no_grad():
        plain = deployed(torch.from_numpy(photos))
        scales = scale_norms_for_float16(deployed, torch.from_numpy(photos))
        rewritten = deployed(torch.from_numpy(photos))
    assert torch.equal(plain, rewritten), "power-of-two scaling is exact in float32"
    assert min(scales.values()) < 1.0 and all(np.log2(s) == int(np.log2(s)) for s in scales.values())
    after = check_fp16(deployed, photos, FP16, accumulation_inputs=1)
    assert not after.failures, after.failures
    blocks = {row.block for row in after.results[1].blocks}
    assert {f"layers.{stage}.blocks.0" for stage in range(4)} <= blocks and {"patch_embed", "norm", "head"} <= blocks
    assert all(row.margin > 1 for result in after.results for row in result.blocks)


def test_the_xnnpack_form_is_rewritten_too(photos: np.ndarray) -> None:
    torch.manual_seed(0)
    form = litert_form(to_deploy(randomize_norm_stats(create_model("fat_b0"))))
    with torch.no_grad():
        plain = form(torch.from_numpy(photos))
        scale_norms_for_float16(form, torch.from_numpy(photos))
        assert torch.equal(plain, form(torch.from_numpy(photos)))
    tightest = check_fp16(form, photos, FP16, accumulation_inputs=1).results[1].tightest
    assert tightest is not None and tightest.margin > 8  # 1.17x before the rewrite (measured, FAT-B0, 224 px)


def overflowing_checkpoint(folder: Path) -> Path:
    """FAT-B0 whose second stage's first block writes values past 65504 into the residual stream (fine in float32:
    the next norm rescales them)."""
    torch.manual_seed(0)
    model = randomize_norm_stats(create_model("fat_b0"))
    with torch.no_grad():
        model.layers[1].blocks[0].ffn.fc2.weight.mul_(3e5)
    path = folder / "overflowing.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.usefixtures("fake_runtime")
def test_a_float16_overflow_fails_the_fp16_file_and_warns_on_the_fp32_one(tmp_path: Path) -> None:
    checkpoint = overflowing_checkpoint(tmp_path)
    half = export("fat_b0", "npz", "fp16", out=tmp_path / "out", checkpoint=checkpoint)
    assert half.status is Status.FAILED and half.path is None
    assert half.error and "overflow beyond 65504 in layers.1.blocks.0" in half.error

    full = export("fat_b0", "npz", "fp32", out=tmp_path / "out", checkpoint=checkpoint)
    assert full.status is Status.PASSED and full.manifest_path is not None
    warning = next(note for note in full.notes if note.startswith("warning: a float32 file"))
    assert "imaginary phone GPUs" in warning and "layers.1.blocks.0" in warning
    record = json.loads(full.manifest_path.read_text())["verification"]["fp16_check"]
    assert not record["passed"] and record["results"][0]["overflow"].startswith("layers.1.blocks.0")
    rows = {row["block"]: row for row in record["results"][0]["blocks"]}
    assert rows["layers.1.blocks.0"]["peak_value"] > HALF_MAX and rows["layers.0.blocks.1"]["margin_to_65504"] > 1


@pytest.mark.usefixtures("fake_runtime")
def test_a_sound_fp16_file_records_its_margins(tmp_path: Path, trained_looking_checkpoint: Path) -> None:
    artifact = export("fat_b0", "npz", "fp16", out=tmp_path, checkpoint=trained_looking_checkpoint)
    assert artifact.status is Status.PASSED, artifact.error
    assert any(note.startswith("float16 arithmetic (simulated): storage margin") for note in artifact.notes)
    assert artifact.manifest_path is not None
    record = json.loads(artifact.manifest_path.read_text())["verification"]["fp16_check"]
    assert record["passed"] and record["float16_safe_norms"]["scaled"] > 0
    assert [r["arithmetic"] for r in record["results"]] == ["fp16-storage", "fp16-accumulation"]
