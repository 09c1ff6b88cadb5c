"""ExecuTorch ``.pte`` through ``torch.export`` -> ``to_edge_transform_and_lower`` (XNNPACK) -> ``to_executorch``.

``int8-static`` is PT2E quantization with ExecuTorch's ``XNNPACKQuantizer`` (symmetric per-channel int8 weights,
int8 activations, MinMax observers) for the dense convolutions and linears and the depthwise convolutions only
they read from, calibrated on the same images as the other static modes; other depthwise convolutions, elementwise
ops, attention, softmax, GELU and norms stay float.
``int8-dynamic`` is the same quantizer's dynamic configuration: per-channel int8 weights for the dense
convolutions and linears, whose activations XNNPACK quantizes per row at run time (its QD8 GEMMs); depthwise convs
(the quantizer leaves them out), attention matmuls, softmax, GELU and norms stay float, and no calibration images
are needed. See
https://docs.pytorch.org/executorch/stable/backends-xnnpack.html and https://github.com/pytorch/executorch.
"""

from __future__ import annotations

import tempfile
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fat_deploy.common.calibration import calibration_batch, requested_size
from fat_deploy.contract.coverage import Coverage
from fat_deploy.contract.formats import Calibration, Conversion, ExportFormat, ExportRequest
from fat_deploy.contract.reuse import reuse_key, reused
from fat_deploy.contract.timing import artifact_latency
from fat_deploy.models.deploy import executorch_form, pad_tile_inputs
from fat_deploy.precision import Precision
from fat_deploy.runtimes.executorch.coverage import pte_coverage
from fat_deploy.runtimes.executorch.delegation import delegation_report
from fat_deploy.runtimes.executorch.guide import guide
from fat_deploy.runtimes.executorch.session import ExecuTorchBackend

# int8-static quantizes the dense convolutions and linears (XNNPACK's int8 GEMMs), and the depthwise convolutions
# whose output only dense convolutions or linears read (FAT's ConvFFN depthwise conv before fc2, the pooling convs,
# the downsampling conv: their int8 output is what the GEMM reads); it leaves float the other depthwise convolutions
# (XNNPACK's int8 depthwise kernels are slower than its float ones on x86) and the elementwise ADD, MUL, cat and
# pooling the quantizer's global configuration would also annotate. FAT-B0 (random weights, trained-looking norms;
# AMD EPYC family 26 model 2, AVX-512 VNNI, 1 thread). At 64 px, one run: global configuration PT2E 15.1 s, XNNPACK
# lowering 94.9 s; convs and linears 3.5 s, 62.7 s. At 224 px, sliced tiles, another run (15 interleaved timings):
# convs and linears 4.0 s, 67.6 s, 1.16x the fp32 program's speed; every depthwise conv float 4.1 s, 46.8 s, 1.36x.
# Photo-patches test bed (benchmarks/quantization.py, 30 interleaved runs at 224 px): every depthwise conv float
# 1.28x, 0.36x the size, top-1 drop 0.18; the ones feeding GEMMs int8 1.28x, 0.33x, drop 0.18 (one run each).
INT8_STATIC_OPERATORS = (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)


def dense(node: torch.fx.Node) -> bool:
    """False for a depthwise (grouped) conv2d node of a captured graph, True for any other node."""
    if node.target != torch.ops.aten.conv2d.default:
        return True
    groups = node.args[6] if len(node.args) > 6 else node.kwargs.get("groups", 1)
    return bool(groups == 1)


def quantized_in_int8_static(node: torch.fx.Node) -> bool:
    """The int8-static quantizer's filter: every node but a depthwise conv2d whose output reaches anything other
    than a dense convolution or a linear."""
    return dense(node) or (bool(node.users) and all(user.target in INT8_STATIC_OPERATORS and dense(user)
                                                    for user in node.users))


def with_sliced_tiles(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose depthwise tiles slice their outputs instead of reading padded inputs: with the
    depthwise convs float between int8 GEMMs, ExecuTorch 1.5.1's XNNPACK backend cannot load the padded form's
    program (``Failed to load method forward``); the sliced one loads and matches its PyTorch module."""
    return pad_tile_inputs(deepcopy(model), pad=False)


def lower_to_xnnpack(model: nn.Module, example: torch.Tensor) -> tuple[bytes, dict[str, Any]]:
    """The ``.pte`` bytes of ``model`` (in eval mode; a PT2E-converted module refuses ``.eval()``) lowered to
    XNNPACK, and its delegation report."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    with torch.no_grad():
        program = torch.export.export(model, (example,))
    edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
    report = delegation_report(edge.exported_program().graph_module)
    return edge.to_executorch().buffer, report


def lower_float(model: nn.Module, example: torch.Tensor) -> tuple[bytes, dict[str, Any]]:
    """:func:`lower_to_xnnpack` of the float ``model``, lowered once per run (:mod:`fat_deploy.contract.reuse`):
    the int8 modes of one model share their float reference program."""
    model.eval()
    return reused(reuse_key("executorch-xnnpack", model, example), lambda: lower_to_xnnpack(model, example))


def quantize_pt2e(model: nn.Module, example: torch.Tensor, samples: torch.Tensor, dynamic: bool = False) -> nn.Module:
    """PT2E int8 for XNNPACK: observers inserted by the quantizer, run on ``samples``, then converted. ``dynamic``:
    activations are quantized at run time, so the observers only see the weights (one sample is enough)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    quantizer = XNNPACKQuantizer()
    if dynamic:  # the dynamic configuration annotates dense convolutions and linears only
        quantizer.set_global(config)
    else:
        for operator in INT8_STATIC_OPERATORS:
            quantizer.set_operator_type(operator, config)
        quantizer.set_filter_function(quantized_in_int8_static)
    with torch.no_grad():
        captured = torch.export.export(model.eval(), (example,)).module()
        prepared = prepare_pt2e(captured, quantizer)
        for sample in samples:
            prepared(sample[None])
        converted: nn.Module = convert_pt2e(prepared)
        return converted


class ExecuTorchFormat(ExportFormat):
    backend = ExecuTorchBackend()
    name = "executorch"
    suffix = ".pte"
    precisions = (Precision.FP32, Precision.INT8_DYNAMIC, Precision.INT8_STATIC)
    conversion_weight = 6.0  # torch.export + the XNNPACK lowering's passes: the slowest converter here
    runtime = "executorch (XNNPACK)"
    converter_modules = ("executorch", "torchao")
    extra = "executorch"
    bundle_platform = "ios"

    def integration_guide(self, file_name: str, manifest: dict[str, Any]) -> str:
        return guide(file_name, manifest)

    def runtime_form(self, deployed: nn.Module) -> nn.Module:
        """The deploy form XNNPACK takes whole (no LayerNorm, expand or split left to portable kernels), its
        depthwise tiles reading zero-padded inputs (:func:`executorch_form`)."""

        return executorch_form(deployed)

    def convert(self, request: ExportRequest, path: Path) -> Conversion:
        example = torch.randn(request.batch, 3, *request.img_size)
        conversion = Conversion(details={"converter": "torch.export + executorch.exir to_edge_transform_and_lower",
                                         "partitioner": "XnnpackPartitioner"})
        details = conversion.details
        if request.precision == "int8-static":
            samples, sources = calibration_batch(request.spec, request.img_size, request.options.get("calibration"),
                                                 requested_size(request.options))
            model = quantize_pt2e(with_sliced_tiles(request.model), example, torch.from_numpy(samples))
            details.update({
                "quantizer": "PT2E XNNPACKQuantizer (torchao.quantization.pt2e)",
                "scheme": ("static: dense convolutions, linears and the depthwise convolutions only they read from, "
                           "with symmetric per-channel int8 weights and int8 activations; other depthwise "
                           "convolutions, elementwise ops, attention, softmax, GELU and norms float; float32 I/O"),
            })
            conversion.calibration = Calibration(method="minmax", samples=len(samples), images=sources)
            program, report = lower_to_xnnpack(model, example)
            self._quantization_cost(conversion, request, example, program, path)
        elif request.precision == "int8-dynamic":
            model = quantize_pt2e(request.model, example, example, dynamic=True)
            details.update({
                "quantizer": "PT2E XNNPACKQuantizer (torchao.quantization.pt2e), dynamic configuration",
                "scheme": ("dynamic: symmetric per-channel int8 weights for dense convolutions and linears, their "
                           "activations quantized per row at run time (XNNPACK QD8 GEMMs); depthwise convs, "
                           "attention matmuls, softmax, GELU and norms float; float32 I/O"),
            })
            program, report = lower_to_xnnpack(model, example)
            self._quantization_cost(conversion, request, example, program, path)
        else:
            program, report = lower_float(request.model, example)
        path.write_bytes(program)
        details["delegation"] = report
        return conversion

    @staticmethod
    def _quantization_cost(conversion: Conversion, request: ExportRequest, example: torch.Tensor, program: bytes,
                           path: Path) -> None:
        """Size and speed of the int8 program against the fp32 program of the same model, into ``conversion``."""
        float_program, _ = lower_float(request.model, example)
        with tempfile.TemporaryDirectory(dir=path.parent) as folder:
            float_path, quant_path = Path(folder) / "float.pte", Path(folder) / "int8.pte"
            float_path.write_bytes(float_program)
            quant_path.write_bytes(program)
            conversion.latency = artifact_latency(ExecuTorchFormat.backend, float_path, quant_path, request.img_size,
                                                  request.batch)
        conversion.float_size_bytes = len(float_program)

    def coverage(self, path: Path) -> Coverage:
        return pte_coverage(path)

    def inspect(self, path: Path, request: ExportRequest) -> list[str]:
        from executorch.runtime import Runtime

        meta = Runtime.get().load_program(path).metadata("forward")
        if meta.num_inputs() != 1 or meta.num_outputs() != 1:
            return [f"program has {meta.num_inputs()} inputs and {meta.num_outputs()} outputs, expected 1 and 1"]
        shape = list(meta.input_tensor_meta(0).sizes())
        expected = self.io_spec(request)["input"]["shape"]
        return [] if shape == expected else [f"input shape {shape} != expected {expected}"]

    def io_spec(self, request: ExportRequest) -> dict[str, Any]:
        return {
            "input": {"index": 0, "shape": [request.batch, 3, *request.img_size], "dtype": "float32", "layout": "NCHW",
                      "method": "forward"},
            "output": {"index": 0, "shape": [request.batch, request.num_classes], "dtype": "float32",
                       "meaning": "logits"},
        }
