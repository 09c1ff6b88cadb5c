"""--bundle: how an x86 / edge application runs the OpenVINO IR (Python and C++)."""

from __future__ import annotations

from typing import Any

from fat_deploy.runtimes.openvino.standalone import MODEL_XML, PRECISION_HINT


def guide(file_name: str, manifest: dict[str, Any]) -> str:
    comparisons = manifest["verification"].get("comparisons", {})
    worst = max((c["max_abs_diff"] for c in comparisons.values()), default=None)
    checked = (f"compiled by OpenVINO {manifest['tool_versions'].get('openvino', '')} on this CPU with "
               f"`INFERENCE_PRECISION_HINT={PRECISION_HINT}` and compared with PyTorch: max abs diff {worst:.1e}"
               if worst is not None else "not run here")
    shape = manifest["input"]["shape"]
    return f"""## {file_name} (OpenVINO IR)

The folder holds the IR pair `{MODEL_XML}` + `model.bin`. Input {shape}, NCHW float32, normalised as in the
input contract; output logits. Checked here: {checked}. Ask for f32 arithmetic: without the hint OpenVINO's CPU
plugin runs bfloat16 on CPUs with AVX512_BF16 or AMX (FAT-B0's logits then move by ~1e-2), and GPU/NPU plugins
run f16.

```python
import openvino as ov  # pip install openvino
core = ov.Core()
compiled = core.compile_model("{file_name}/{MODEL_XML}", "CPU", {{"INFERENCE_PRECISION_HINT": "{PRECISION_HINT}"}})
logits = compiled(chw[None])[0]  # chw: float32 {shape[1:]}, normalised
```
```cpp
ov::Core core;
auto compiled = core.compile_model("{file_name}/{MODEL_XML}", "CPU", ov::hint::inference_precision(ov::element::f32));
auto request = compiled.create_infer_request();
request.set_input_tensor(ov::Tensor(ov::element::f32, {{{", ".join(map(str, shape))}}}, chw));  // float* chw
request.infer();
const float* logits = request.get_output_tensor().data<float>();
```"""
