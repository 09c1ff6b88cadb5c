"""--bundle: how an iOS or Android app runs the .pte file with ExecuTorch."""

from __future__ import annotations

from typing import Any

from fat_deploy.runtimes.executorch.delegation import delegation_line


def guide(file_name: str, manifest: dict[str, Any]) -> str:
    comparisons = manifest["verification"].get("comparisons", {})
    worst = max((c["max_abs_diff"] for c in comparisons.values()), default=None)
    checked = (f"run in ExecuTorch's Python runtime and compared with PyTorch: max abs diff {worst:.1e}"
               if worst is not None else "not run here")
    shape = manifest["input"]["shape"]
    stem = file_name.removesuffix(".pte")
    report = manifest["format_details"].get("delegation")
    delegation = delegation_line(report) if report else "no delegation report"
    return f"""## {file_name} (ExecuTorch, XNNPACK)

Lowered to ExecuTorch's XNNPACK backend ({delegation});
the app links the ExecuTorch runtime with the XNNPACK backend (both in the prebuilt packages). Input
{shape}, NCHW float32, normalised as in the input contract; output logits (`labels.txt` names them). Checked
here: {checked}.

```swift
// iOS: Swift package https://github.com/pytorch/executorch (products executorch, backend_xnnpack)
import ExecuTorch

let module = Module(filePath: Bundle.main.path(forResource: "{stem}", ofType: "pte")!)
let input = Tensor<Float>(chw, shape: {shape})  // chw: [Float], NCHW, normalised
let logits: Tensor<Float> = try module.forward(input)!
let scores = logits.scalars()
```

```kotlin
// Android: implementation("org.pytorch:executorch-android:<version>")
val module = Module.load(filePath)
val input = Tensor.fromBlob(chw, longArrayOf({", ".join(map(str, shape))}))
val logits = module.forward(EValue.from(input))[0].toTensor().dataAsFloatArray
```"""
