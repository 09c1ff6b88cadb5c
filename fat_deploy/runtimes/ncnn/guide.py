"""--bundle: how an Android app runs the ncnn model (C++ through JNI; ncnn's own API)."""

from __future__ import annotations

from typing import Any

from fat_deploy.runtimes.ncnn.standalone import BIN, INPUT_NAME, OUTPUT_NAME, PARAM


def guide(file_name: str, manifest: dict[str, Any]) -> str:
    comparisons = manifest["verification"].get("comparisons", {})
    worst = max((c["max_abs_diff"] for c in comparisons.values()), default=None)
    checked = (f"loaded by ncnn {manifest['tool_versions'].get('ncnn', '')} on this x86 CPU (fp32) and compared "
               f"with PyTorch: max abs diff {worst:.1e}" if worst is not None else "not run here")
    pre = manifest["preprocessing"]
    size = pre["center_crop"]
    mean = ", ".join(f"{255 * m:.3f}f" for m in pre["mean"])
    norm = ", ".join(f"{1 / (255 * s):.6f}f" for s in pre["std"])
    return f"""## {file_name}/ (ncnn)

`{PARAM}` + `{BIN}`; input blob `{INPUT_NAME}` (3 x {size[0]} x {size[1]}, one image per extraction), output
`{OUTPUT_NAME}` (logits). Checked here: {checked}. ncnn turns on fp16 storage and arithmetic by default where the
CPU has them (ARMv8.2 phones) and Vulkan where asked: this check ran fp32; the float16 simulation in the manifest
(`verification.fp16_check`) is what says how the model holds in fp16.

```cpp
#include "net.h"
ncnn::Net net;
net.opt.use_vulkan_compute = false;  // true for the GPU path (not checked here)
net.load_param("{file_name}/{PARAM}");
net.load_model("{file_name}/{BIN}");
// rgba: the photo upright, already centre-cropped to the input contract's region (see above)
ncnn::Mat in = ncnn::Mat::from_pixels_resize(rgba, ncnn::Mat::PIXEL_RGBA2RGB, crop_w, crop_h, {size[1]}, {size[0]});
const float mean[3] = {{{mean}}}, norm[3] = {{{norm}}};
in.substract_mean_normalize(mean, norm);
ncnn::Extractor ex = net.create_extractor();
ex.input("{INPUT_NAME}", in);
ncnn::Mat logits;
ex.extract("{OUTPUT_NAME}", logits);
```
`from_pixels_resize` resizes bilinearly (the contract says {pre['interpolation']}): measure what it costs you."""
