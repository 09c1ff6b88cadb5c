"""--bundle: how an Android app runs the .mnn file with MNN (Kotlin through its JNI wrapper is app code; the C++
calls are MNN's own API)."""

from __future__ import annotations

from typing import Any

from fat_deploy.runtimes.mnn.standalone import INPUT_NAME, OUTPUT_NAME, PRECISION, WINOGRAD_LEVEL


def guide(file_name: str, manifest: dict[str, Any]) -> str:
    comparisons = manifest["verification"].get("comparisons", {})
    worst = max((c["max_abs_diff"] for c in comparisons.values()), default=None)
    checked = (f"loaded by MNN {manifest['tool_versions'].get('MNN', '')} on this x86 CPU (precision "
               f"'{PRECISION}') and compared with PyTorch: max abs diff {worst:.1e}" if worst is not None
               else "not run here")
    shape = manifest["input"]["shape"]
    return f"""## {file_name} (MNN)

Input `{INPUT_NAME}` {shape}, NCHW float32, normalised as in the input contract; output `{OUTPUT_NAME}` (logits).
Checked here: {checked}. Build MNN for Android (`project/android/build_64.sh`) and call it from your JNI code;
`precision` "low" lets ARMv8.2 cores compute in fp16 (not checked here), and Winograd level {WINOGRAD_LEVEL} keeps
dense 3x3 convolutions as accurate as this check.

```cpp
#include <MNN/expr/Module.hpp>
#include <MNN/expr/Executor.hpp>
using namespace MNN::Express;
MNN::BackendConfig backend; backend.precision = MNN::BackendConfig::Precision_High;
auto runtime = std::shared_ptr<Executor::RuntimeManager>(
    Executor::RuntimeManager::createRuntimeManager({{MNN_FORWARD_CPU, MNN::BackendConfig{{backend}}, 4}}));
runtime->setHint(MNN::Interpreter::WINOGRAD_MEMORY_LEVEL, {WINOGRAD_LEVEL});
std::shared_ptr<Module> net(Module::load({{"{INPUT_NAME}"}}, {{"{OUTPUT_NAME}"}}, "{file_name}", runtime));
auto input = _Input({{{", ".join(map(str, shape))}}}, NCHW, halide_type_of<float>());
::memcpy(input->writeMap<float>(), chw, sizeof(float) * input->getInfo()->size);  // float* chw, normalised
auto logits = net->onForward({{input}})[0]->readMap<float>();
```"""
