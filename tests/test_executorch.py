"""ExecuTorch: .pte export (fp32, PT2E int8-dynamic and int8-static) verified in executorch.runtime, delegation,
threads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

from fat_deploy.contract.session import BackendError
from fat_deploy.errors import FatDeployError
from fat_deploy.exporters import export
from fat_deploy.runtimes.executorch.converter import dense, lower_to_xnnpack, quantize_pt2e
from fat_deploy.runtimes.executorch.delegation import delegation_line, op_type
from fat_deploy.runtimes.executorch.session import set_thread_count


class ConvThenLayerNorm(nn.Module):
    """A convolution (XNNPACK takes it) followed by a channel LayerNorm (ExecuTorch 1.5's partitioner does not)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x).permute(0, 2, 3, 1))


def test_delegation_report_counts_delegated_and_portable_ops() -> None:
    _, report = lower_to_xnnpack(ConvThenLayerNorm().eval(), torch.randn(1, 3, 16, 16))
    assert report["by_op"]["convolution"]["delegated"] == 1
    assert report["portable_by_op"] == {"native_layer_norm": 1}
    assert report["portable_ops"] == 1 and report["delegated_subgraphs"] >= 1
    assert "portable kernels: native_layer_norm x1" in delegation_line(report)


def test_per_op_profile_separates_xnnpack_and_portable_kernels(tmp_path: Path) -> None:
    from fat_deploy.contract.session import LoadRequest
    from fat_deploy.latency.op_profile import profile_ops
    from fat_deploy.registry import get_backend

    program, _ = lower_to_xnnpack(ConvThenLayerNorm().eval(), torch.randn(1, 3, 16, 16))
    path = tmp_path / "tiny.pte"
    path.write_bytes(program)
    runner = get_backend("executorch").load(LoadRequest(model_name="tiny", model=None, artifact=path, batch=1,
                                                        img_size=(16, 16), threads=1))
    prepared = runner.prepare(torch.randn(1, 3, 16, 16).numpy())
    profile = profile_ops(runner, prepared, runs=3, source="executorch profiler")
    types = {row["op_type"]: row for row in profile["by_op_type"]}
    assert "portable native_layer_norm" in types and types["portable native_layer_norm"]["count_per_run"] == 1
    assert any(name.startswith("XNNPACK Convolution") for name in types)
    assert profile["total_ms_per_run"] > 0


class ConvAddLinear(nn.Module):
    """A dense and a depthwise convolution, a residual ADD, a MUL by a gate, a depthwise convolution read by a
    pointwise one (FAT's ConvFFN: dwconv -> fc2) and a linear: what a FAT block's int8-static recipe meets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.feeds_pointwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pointwise = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = (x + self.depthwise(self.conv(x))) * torch.sigmoid(x)
        y = self.pointwise(self.feeds_pointwise(y))
        return self.fc(y.mean((2, 3)))


def test_int8_static_quantizes_gemms_and_the_depthwise_convolutions_only_gemms_read() -> None:
    model, example = ConvAddLinear().eval(), torch.randn(1, 8, 8, 8)
    graph = quantize_pt2e(model, example, torch.randn(4, 8, 8, 8)).graph  # type: ignore[union-attr]
    quantize = torch.ops.quantized_decomposed.quantize_per_tensor.default  # registered by torchao's PT2E
    quantized_outputs = [node.args[0] for node in graph.nodes if node.target == quantize]
    targets = {node.target for node in quantized_outputs}
    assert {torch.ops.aten.conv2d.default, torch.ops.aten.linear.default} <= targets
    convs = [node for node in graph.nodes if node.target == torch.ops.aten.conv2d.default]
    assert len(convs) == 4 and [dense(conv) for conv in convs] == [True, False, False, True]
    # The depthwise conv read by the ADD stays float (XNNPACK's int8 depthwise kernels are the slower ones on x86);
    # the one only the pointwise conv reads is int8 (its int8 output is what the GEMM reads: 0.36x -> 0.33x size).
    int8_weights = [getattr(conv.args[1], "target", None) == torch.ops.quantized_decomposed.dequantize_per_channel.default
                    for conv in convs]
    assert int8_weights == [True, False, True, True] and convs[1] not in quantized_outputs
    # The ADD and the MUL the global configuration would quantize compute in float (a third more ops to lower):
    # neither reads a dequantized int8 tensor (the MUL's output is quantized for the depthwise conv that reads it).
    dequantize = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    elementwise = [node for node in graph.nodes if node.target in (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor)]
    assert len(elementwise) == 2
    assert not [arg for node in elementwise for arg in node.args if getattr(arg, "target", None) == dequantize]


def test_op_type_names() -> None:
    assert op_type("aten_native_layer_norm_default_3") == "native_layer_norm"
    assert op_type("aten_convolution_default") == "convolution"
    assert op_type("aten_split_with_sizes_copy_default_11") == "split_with_sizes_copy"


def test_threads_are_set_and_read_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from executorch.extension.pybindings import portable_lib

    for threads in (1, 2):
        set_thread_count(threads)
        assert portable_lib._threadpool_get_thread_count() == threads
    monkeypatch.setattr(portable_lib, "_threadpool_get_thread_count", lambda: 7)
    with pytest.raises(BackendError, match="asked for 1 threads, its thread pool has 7"):
        set_thread_count(1)


@pytest.mark.parametrize("precision,kwargs,message", [
    ("fp16", {}, "executorch does not support precision fp16: it supports fp32, int8-dynamic, int8-static"),
    ("int8-weights", {}, "executorch does not support precision int8-weights"),
    ("int8-dynamic", {"calibration_size": 8}, "applies to calibrated modes .* only, not int8-dynamic"),
    ("fp32", {"nhwc": True}, "--nhwc is not supported for executorch"),
    ("int8-static", {"calibration_method": "percentile"}, "--calibration-method percentile is not available for executorch"),
    ("int8-static", {"keep_float": ["head"]}, "--keep-float is not supported for executorch"),
    ("fp32", {"no_such_option": 1}, "unknown option 'no_such_option'"),
])
def test_executorch_options_are_checked_up_front(tmp_path: Path, precision: str, kwargs: dict, message: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(FatDeployError, match=message):
        export("fat_b0", "executorch", precision, out=tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_fp32_pte_is_verified_and_reports_delegation(trained_exports: dict[str, Any]) -> None:
    artifact = trained_exports["executorch"]
    assert artifact["status"] == "passed", artifact["error"]
    assert artifact["path"].endswith(".pte")
    manifest = json.loads(Path(artifact["manifest"]).read_text())
    (comparison,) = manifest["verification"]["comparisons"].values()
    assert comparison["passed"] and comparison["max_abs_diff"] < 1e-3
    assert manifest["verification"]["runtime"] == "executorch (XNNPACK)"
    delegation = manifest["format_details"]["delegation"]
    # The XNNPACK form of the deploy form: every op in one XNNPACK subgraph, nothing left to portable kernels.
    assert delegation["by_op"]["convolution"]["delegated"] > 0
    assert delegation["portable_by_op"] == {} and delegation["delegated_subgraphs"] == 1
    assert manifest["tool_versions"]["executorch"] and manifest["input"]["shape"] == [1, 3, 224, 224]
    coverage = manifest["format_details"]["coverage"]  # read back from the .pte: one delegate call, no kernel call
    assert coverage["ops"] == {"delegate:XnnpackBackend": 1} and "XNNPACK whole" in artifact["notes"]


@pytest.mark.slow
def test_latency_backend_times_a_pte_on_one_thread(trained_exports: dict[str, Any]) -> None:
    from fat_deploy.latency.harness import measure

    pte = Path(trained_exports["executorch"]["path"])
    record = measure("fat_b0", "executorch", threads=1, runs=5, warmup=1, artifact=pte)
    assert record.status == "ok", record.reason
    assert record.threads == 1 and record.environment["executorch"]
    assert record.stats["median_ms"] > 0
