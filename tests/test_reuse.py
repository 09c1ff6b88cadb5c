"""Float conversions reused within one run (fat_deploy.contract.reuse): keyed by content, never outside a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

from fat_deploy.cli.export import main as fat_export
from fat_deploy.contract import reuse
from fat_deploy.contract.reuse import model_fingerprint, reuse_key, reused, reusing_conversions
from fat_deploy.models import create_model
from fat_deploy.models.deploy import executorch_form, pad_tile_inputs, to_deploy


def test_fingerprint_follows_the_content_not_the_object() -> None:
    first, second = create_model("fat_b0"), create_model("fat_b0")
    second.load_state_dict(first.state_dict())
    assert model_fingerprint(first) == model_fingerprint(second) is not None
    with torch.no_grad():
        second.head.bias[0] += 1e-6  # type: ignore[index, operator]
    assert model_fingerprint(first) != model_fingerprint(second)
    # A plain attribute that changes forward (the tiles' padding) changes it too; the weights are the same.
    padded = executorch_form(to_deploy(first))
    sliced = pad_tile_inputs(executorch_form(to_deploy(first)), pad=False)
    assert model_fingerprint(padded) != model_fingerprint(sliced)
    assert reuse_key("x", first, torch.zeros(1, 3, 64, 64)) != reuse_key("x", first, torch.zeros(1, 3, 96, 96))


def test_a_model_whose_forward_cannot_be_told_from_its_content_is_never_reused() -> None:
    hooked = nn.Linear(2, 2)
    hooked.register_forward_hook(lambda module, inputs, output: output * 2)
    opaque = nn.Linear(2, 2)
    opaque.scale = lambda x: x * 2  # type: ignore[assignment]  # a callable attribute: its effect is unknown
    for model in (hooked, opaque):
        assert model_fingerprint(model) is None and reuse_key("x", model, torch.zeros(1, 2)) is None


def test_reused_builds_once_per_run_and_hands_out_copies() -> None:
    built: list[int] = []

    def build() -> dict[str, Any]:
        built.append(1)
        return {"ops": [1, 2]}

    reused("k", build), reused("k", build)
    assert len(built) == 2  # outside a run nothing is kept
    with reusing_conversions():
        first = reused("k", build)
        first["ops"].append(3)  # a caller's change stays its own
        with reusing_conversions():  # nested: the same run
            assert reused("k", build) == {"ops": [1, 2]}
        reused(None, build)  # no key: always built
    assert len(built) == 4
    with reusing_conversions():  # a new run starts empty
        reused("k", build)
        for index in range(reuse.KEPT_RESULTS):
            reused(f"other{index}", build)
        reused("k", build)  # pushed out by the newer ones: built again
    assert len(built) == 5 + reuse.KEPT_RESULTS + 1


def test_one_fat_export_run_converts_a_models_float_graph_once(tmp_path: Path, trained_looking_checkpoint: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    exports: list[Any] = []
    real_export = torch.onnx.export

    def counted(*args: Any, **kwargs: Any) -> Any:
        exports.append(args[0])
        return real_export(*args, **kwargs)
    monkeypatch.setattr(torch.onnx, "export", counted)
    code = fat_export(["--model", "fat_b0", "--format", "onnx", "--precision", "int8-dynamic", "int8-static",
                       "--img-size", "32", "--checkpoint", str(trained_looking_checkpoint), "--jobs", "1",
                       "--out", str(tmp_path), "--no-verify"])
    assert code == 0 and len(exports) == 1
    assert {path.name for path in tmp_path.glob("*.onnx")} == {"fat_b0_onnx_int8-dynamic.onnx",
                                                               "fat_b0_onnx_int8-static.onnx"}
