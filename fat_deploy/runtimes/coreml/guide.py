"""--bundle: how an iOS app runs the Core ML package through Vision."""

from __future__ import annotations

from typing import Any


def guide(file_name: str, manifest: dict[str, Any]) -> str:
    crop = manifest["preprocessing"]["crop_fraction"]
    reason = manifest["verification"].get("runtime_unavailable_reason")
    checked = ("run with Core ML and compared with PyTorch" if manifest["status"] == "passed" else
               f"its spec (inputs, op set, class names, metadata) only: {reason}" if reason else manifest["status"])
    return f"""## {file_name} (Core ML, through Vision)

An image classifier: it takes the RGB image (scale and mean/std inside the model) and returns class names with
probabilities; Xcode shows its metadata and compiles it when it is added to the app target. Checked here:
{checked}.

```swift
import Vision

let model = try VNCoreMLModel(for: MLModel(contentsOf: compiledModelURL))  // Xcode: <ClassName>().model
let request = VNCoreMLRequest(model: model) {{ request, _ in
    let top5 = (request.results as? [VNClassificationObservation])?.prefix(5)  // identifier, confidence
}}
// The model's centre crop: a centred square of {crop:g} x the shorter side (normalised coordinates).
let w = CGFloat(image.width), h = CGFloat(image.height), side = min(w, h) * {crop:g}
request.regionOfInterest = CGRect(x: (w - side) / 2 / w, y: (h - side) / 2 / h, width: side / w, height: side / h)
request.imageCropAndScaleOption = .scaleFill
// A CGImage alone is read as stored: pass the photo's orientation (UIImage.imageOrientation or its EXIF tag).
try VNImageRequestHandler(cgImage: image, orientation: orientation).perform([request])
```"""
