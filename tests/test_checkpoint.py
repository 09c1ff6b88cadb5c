"""Checkpoints: every accepted format round-trips; every bad one gives a clear CheckpointError."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from fat_deploy.errors import CheckpointError
from fat_deploy.models import create_model
from fat_deploy.models.checkpoint import load_state_dict, read_checkpoint


@pytest.fixture
def trained(fat_b0: torch.nn.Module) -> torch.nn.Module:
    return fat_b0


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def _official_checkpoint(model: torch.nn.Module) -> dict:
    """What the official training script saves (github.com/qhfan/FAT ``classification/utils.py``
    save_checkpoint), with a real yacs CfgNode."""
    from yacs.config import CfgNode

    config = CfgNode({"MODEL": CfgNode({"TYPE": "FAT", "NAME": "FAT_b0"}), "TAG": "default"})
    config.freeze()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": {"last_epoch": 3},
        "max_accuracy": 77.6,
        "epoch": 299,
        "config": config,
    }


def test_official_training_checkpoint_loads(tmp_path: Path, trained: torch.nn.Module) -> None:
    path = tmp_path / "ckpt_epoch_best.pth"
    torch.save(_official_checkpoint(trained), path)
    # torch's own weights-only loader cannot rebuild the pickled CfgNode ...
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)
    # ... ours reads it without importing yacs, keeping the config only as inert data.
    raw = read_checkpoint(path)
    assert type(raw["config"]).__module__ == "fat_deploy.models.checkpoint"
    assert raw["config"]["MODEL"]["NAME"] == "FAT_b0"
    assert _same_outputs(create_model("fat_b0", checkpoint=path), trained)


@pytest.mark.parametrize("wrapping", ["bare", "module_prefix", "state_dict_key", "ema", "orig_mod"])
def test_wrapped_state_dicts_load(tmp_path: Path, trained: torch.nn.Module, wrapping: str) -> None:
    state = trained.state_dict()
    payload: object = {
        "bare": state,
        "module_prefix": OrderedDict((f"module.{k}", v) for k, v in state.items()),
        "state_dict_key": {"state_dict": state, "epoch": 3},
        "ema": {"model": {k: torch.zeros_like(v) for k, v in state.items()}, "state_dict_ema": state},
        "orig_mod": {f"_orig_mod.{k}": v for k, v in state.items()},
    }[wrapping]
    path = tmp_path / "weights.pth"
    torch.save(payload, path)
    assert _same_outputs(create_model("fat_b0", checkpoint=path), trained)


def test_safetensors_round_trip(tmp_path: Path, trained: torch.nn.Module) -> None:
    path = tmp_path / "fat_b0.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, path)
    assert _same_outputs(create_model("fat_b0", checkpoint=path), trained)


def test_missing_num_batches_tracked_is_tolerated(tmp_path: Path, trained: torch.nn.Module) -> None:
    state = {k: v for k, v in trained.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "w.pth"
    torch.save(state, path)
    assert _same_outputs(create_model("fat_b0", checkpoint=path), trained)


def test_num_classes_follows_the_checkpoint_head(tmp_path: Path) -> None:
    finetuned = create_model("fat_b0", num_classes=37)
    path = tmp_path / "pets.pth"
    torch.save(finetuned.state_dict(), path)
    model = create_model("fat_b0", checkpoint=path)
    assert model.head.out_features == 37
    with pytest.raises(CheckpointError, match=r"head.weight \(37, 256\) vs \(1000, 256\)"):
        create_model("fat_b0", checkpoint=path, num_classes=1000)


def test_code_payload_is_refused_and_never_runs(tmp_path: Path, trained: torch.nn.Module) -> None:
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    # Build the payload in a separate process so this one never defines the malicious class.
    script = (
        "import os, sys, torch\n"
        "class Payload:\n"
        "    def __reduce__(self):\n"
        f"        return (os.system, ('touch {sentinel}',))\n"
        f"torch.save({{'model': {{'w': torch.zeros(1)}}, 'x': Payload()}}, {str(path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    with pytest.raises(CheckpointError, match=r"refusing checkpoint: it references '(posix|os|nt)\.system'"):
        create_model("fat_b0", checkpoint=path)
    assert not sentinel.exists()


def test_eval_payload_inside_config_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil2.pth"
    script = (
        "import torch\n"
        "class Cfg:\n"
        "    def __reduce__(self):\n"
        "        return (eval, ('1+1',))\n"
        f"torch.save({{'model': {{'w': torch.zeros(1)}}, 'config': Cfg()}}, {str(path)!r})\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    with pytest.raises(CheckpointError, match="builtins.eval"):
        read_checkpoint(path)


def test_wrong_architecture_names_keys_and_guesses_variant(tmp_path: Path) -> None:
    path = tmp_path / "b1.pth"
    torch.save(create_model("fat_b1").state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        create_model("fat_b0", checkpoint=path)
    message = str(info.value)
    assert "does not fit fat_b0" in message and "shape mismatches" in message
    assert "try --model fat_b1" in message
    assert "\n" not in message


def test_deeper_variant_reports_unexpected_keys(tmp_path: Path) -> None:
    path = tmp_path / "b3.pth"
    torch.save(create_model("fat_b3").state_dict(), path)
    with pytest.raises(CheckpointError, match=r"unexpected \d+ keys: layers\.0\.blocks\.2.*try --model fat_b3"):
        create_model("fat_b2", checkpoint=path)


def test_foreign_weights_match_no_variant(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}, path)
    with pytest.raises(CheckpointError, match="missing .* keys.*match no registered variant"):
        create_model("fat_b0", checkpoint=path)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: None, "checkpoint not found"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: p.write_text("hello, not weights"), "not a PyTorch checkpoint"),
        (lambda p: torch.save({"epoch": 3, "lr": 0.1}, p), "no model weights found"),
        (lambda p: torch.save([1, 2, 3], p), "no model weights found"),
    ],
    ids=["missing", "directory", "empty", "text", "no-weights", "list"],
)
def test_bad_files(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "ckpt.pth"
    make(path)
    with pytest.raises(CheckpointError, match=message):
        load_state_dict(path)


def test_truncated_checkpoint(tmp_path: Path, trained: torch.nn.Module) -> None:
    good = tmp_path / "good.pth"
    torch.save(trained.state_dict(), good)
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        create_model("fat_b0", checkpoint=bad)


def test_corrupt_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match="not a readable .safetensors"):
        create_model("fat_b0", checkpoint=path)
