"""--bundle: how a web page runs the .onnx file with onnxruntime-web."""

from __future__ import annotations

from typing import Any


def guide(file_name: str, manifest: dict[str, Any]) -> str:
    pre = manifest["preprocessing"]
    size = pre["center_crop"][0]
    name, output = manifest["input"]["name"], manifest["output"]["name"]
    return f"""## {file_name} (onnxruntime-web)

Runs in the browser with onnxruntime-web (WebAssembly, or WebGPU where the browser has it). The function below
does the input contract with a canvas (the browser's own resampling, not {pre['interpolation']}); for JPEG/PNG
bytes in and probabilities out on a server, export with `fat-export --format onnx --image-bytes`.

```js
import * as ort from "onnxruntime-web";

const MEAN = {list(pre['mean'])}, STD = {list(pre['std'])}, SIZE = {size}, CROP = {pre['crop_fraction']:g};

function toTensor(image) {{  // an HTMLImageElement (browsers apply EXIF orientation when drawing it) or ImageBitmap
  const canvas = new OffscreenCanvas(SIZE, SIZE), context = canvas.getContext("2d");
  const side = Math.min(image.width, image.height) * CROP;
  context.drawImage(image, (image.width - side) / 2, (image.height - side) / 2, side, side, 0, 0, SIZE, SIZE);
  const {{ data }} = context.getImageData(0, 0, SIZE, SIZE), plane = SIZE * SIZE;
  const chw = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++)
    for (let c = 0; c < 3; c++) chw[c * plane + i] = (data[4 * i + c] / 255 - MEAN[c]) / STD[c];
  return new ort.Tensor("float32", chw, [1, 3, SIZE, SIZE]);
}}

const session = await ort.InferenceSession.create("{file_name}");
const {{ {output} }} = await session.run({{ {name}: toTensor(image) }});  // {output}.data: Float32Array
```"""
