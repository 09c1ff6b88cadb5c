"""int8 recipes compared on the hard test bed: what each choice costs or saves in held-out top-1, one run.

    .venv/bin/python benchmarks/int8_recipes.py [--only onnx-minmax-32 ...]

Every row is a ``fat-export`` of the test bed's FAT-B0 (``python -m fat_deploy.testbed``: which of 17 shipped photos
a 64 px patch comes from, 544 held-out patches, float top-1 about 81%) with ``--eval-dir`` on the held-out patches,
the accuracy search off, so each row shows what its recipe does by itself: the top-1 drop measured by the runtime
running the file, the cosine of its logits to PyTorch's, and the XNNPACK partitions where LiteRT runs it. Rows:
onnxruntime's calibrators (MinMax, Percentile) on 32 and 64 calibration patches; LiteRT with and without
the stem quantized; OpenVINO (NNCF). Speed is benchmarks/quantization.py's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch

from fat_deploy.environment import host_info, int8_isa
from fat_deploy.exporters import export
from fat_deploy.testbed import IMG_SIZE, build

RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    **{f"onnx-{method}-{samples}": ("onnx", {"calibration_method": method, "calibration_size": samples})
       for samples in (32, 64) for method in ("minmax", "percentile")},
    "tflite-default": ("tflite", {}),
    "tflite-int8-stem": ("tflite", {"int8_stem": True}),
    "openvino-default": ("openvino", {}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(RECIPES), help="these rows only")
    args = parser.parse_args()
    bed = build()
    print(f"host: {host_info()}; int8 ISA: {int8_isa()}; torch {torch.__version__}; test bed float top-1 "
          f"{bed.record['float_top1_pytorch']}% on {bed.record['held_out_images']} held-out patches, {IMG_SIZE} px")
    print(f"{'recipe':22s} {'status':8s} {'top-1 %':>8s} {'drop':>6s} {'cosine':>7s}  notes")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.only or list(RECIPES):
            fmt, options = RECIPES[name]
            artifact = export("fat_b0", fmt, "int8-static", Path(folder) / name, checkpoint=bed.checkpoint,
                              labels=bed.labels, img_size=IMG_SIZE, eval_dir=bed.eval_dir,
                              calibration=bed.calibration_dir, accuracy_search=False, **options)
            measured = artifact.comparison or {}
            partitions = [note for note in artifact.notes if "XNNPACK" in note]
            print(f"{name:22s} {artifact.status:8s} {measured.get('top1', float('nan')):8.2f} "
                  f"{measured.get('top1_drop_points', float('nan')):6.2f} {measured.get('cosine_min', float('nan')):7.3f}"
                  f"  {'; '.join(partitions)}", flush=True)


if __name__ == "__main__":
    main()
