"""--bundle: how an Android app loads the ``--mediapipe`` .tflite (MediaPipe Tasks, TFLite Task Library)."""

from __future__ import annotations

from typing import Any


def guide(file_name: str, manifest: dict[str, Any]) -> str:
    check = manifest["format_details"].get("mediapipe")
    crop = manifest["preprocessing"]["crop_fraction"]
    if not check:
        return (f"## {file_name} (LiteRT)\n\nA plain .tflite: input `{manifest['input']['shape']}` "
                f"({manifest['input']['layout']}), normalised as above; run it with LiteRT's `Interpreter`.")
    return f"""## {file_name} (MediaPipe Tasks / TFLite Task Library)

The file carries TFLite metadata (input normalisation: pixel / 255; the model's mean/std are inside the graph)
and its labels, so MediaPipe's `ImageClassifier` needs no preprocessing code and returns class names. Checked
here: MediaPipe's `ImageClassifier` (Python, mediapipe {check.get('version', '')}) loaded this file and, on
{check['images']} photos at the model's input size, returned the same top-{check['top_k']} classes as
{check['reference']}; scores within {check['max_score_diff']:.1e} (tolerance {check['tolerance']:.0e}).

MediaPipe scales the region of interest to the input size itself (bilinear); pass the model's centre crop as
that region:

```kotlin
// build.gradle: implementation("com.google.mediapipe:tasks-vision:<version>")
val classifier = ImageClassifier.createFromOptions(context,
    ImageClassifier.ImageClassifierOptions.builder()
        .setBaseOptions(BaseOptions.builder().setModelAssetPath("{file_name}").build())
        .setMaxResults(5)
        .build())
// bitmap upright: BitmapFactory ignores EXIF orientation, so rotate by ExifInterface(...).rotationDegrees first
val side = minOf(bitmap.width, bitmap.height) * {crop:g}f
val roi = RectF((bitmap.width - side) / 2f / bitmap.width, (bitmap.height - side) / 2f / bitmap.height,
                (bitmap.width + side) / 2f / bitmap.width, (bitmap.height + side) / 2f / bitmap.height)
val result = classifier.classify(BitmapImageBuilder(bitmap).build(),
    ImageProcessingOptions.builder().setRegionOfInterest(roi).build())
val top5 = result.classificationResult().classifications()[0].categories()  // categoryName(), score()
```"""
