"""--bundle: how an Android (or iOS) app runs the .ort file with ONNX Runtime Mobile."""

from __future__ import annotations

from typing import Any

OPERATORS_FILE = "required_operators.config"  # the reduced-build operator list written beside the .ort file


def guide(file_name: str, manifest: dict[str, Any]) -> str:
    check = manifest["verification"].get("comparisons", {})
    worst = max((c["max_abs_diff"] for c in check.values()), default=None)
    checked = (f"loaded in onnxruntime {manifest['tool_versions'].get('onnxruntime', '')} (ORT format) and "
               f"compared with PyTorch: max abs diff {worst:.1e}" if worst is not None else "not run here")
    name, shape = manifest["input"]["name"], manifest["input"]["shape"]
    return f"""## {file_name} (ONNX Runtime Mobile)

ORT format, optimised for any ORT Mobile build (no x86-only kernels). Checked here: {checked}.
`{OPERATORS_FILE}` lists the operators a reduced ONNX Runtime build needs for this model
(`build.sh --minimal_build --include_ops_by_config {OPERATORS_FILE}`); the full `onnxruntime-android` package
runs it as it is.

```kotlin
// build.gradle: implementation("com.microsoft.onnxruntime:onnxruntime-android:<version>")
val env = OrtEnvironment.getEnvironment()
val session = env.createSession(context.assets.open("{file_name}").readBytes())
// chw: FloatArray of {shape}, NCHW, normalised as in the input contract
val input = OnnxTensor.createTensor(env, FloatBuffer.wrap(chw), longArrayOf({", ".join(map(str, shape))}))
val logits = session.run(mapOf("{name}" to input)).use {{ (it[0].value as Array<FloatArray>)[0] }}
```"""
