"""FAT in simulated float16 arithmetic, before and after the float16-safe norm rewrite, per model and form.

    .venv/bin/python benchmarks/float16_margins.py [--models fat_b0 fat_b1 fat_b2 fat_b3] [--size 224]

For each model (random weights with trained-looking norm statistics and affines, as the tests use) and each deploy
form (the plain one: one LayerNorm per norm, as ONNX/Core ML/OpenVINO/MNN get it; LiteRT's: means over H x W then C),
prints per simulated arithmetic whether a value overflowed (and where), the tightest block's margin to 65504 and the
output drift against float32, without and with ``scale_norms_for_float16``. Simulation on the CPU
(fat_deploy.common.fp16): not a device measurement.
"""

from __future__ import annotations

import argparse

import torch

from fat_deploy.common.calibration import verification_inputs
from fat_deploy.common.fp16 import check_fp16
from fat_deploy.common.verify import TOLERANCES
from fat_deploy.environment import host_info
from fat_deploy.models import create_model, get_spec, to_deploy
from fat_deploy.models.deploy import litert_form
from fat_deploy.models.float16_norms import scale_norms_for_float16
from fat_deploy.models.synthetic import randomize_norm_stats
from fat_deploy.precision import Precision


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["fat_b0", "fat_b1", "fat_b2", "fat_b3"])
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    host = host_info()
    print(f"host: {host.get('cpu')} family {host.get('cpu_family')} model {host.get('cpu_model_number')}, "
          f"{host.get('cores')} cores; torch {torch.__version__}; {args.size} px; 6 photos + 2 random inputs "
          "(float16 accumulation on the first 2)")
    print(f"{'model':8} {'form':7} {'rewrite':8} {'arithmetic':18} {'overflow / tightest margin':48} drift")
    for name in args.models:
        torch.manual_seed(0)
        faithful = randomize_norm_stats(create_model(name))
        inputs, _ = verification_inputs(get_spec(name), (args.size, args.size))
        for form_name, form in (("plain", to_deploy(faithful)), ("litert", litert_form(to_deploy(faithful)))):
            for rewrite in (False, True):
                if rewrite:
                    scale_norms_for_float16(form, torch.from_numpy(inputs))
                check = check_fp16(form, inputs, TOLERANCES[Precision.FP16])
                for result in check.results:
                    tightest = result.tightest
                    where = (f"OVERFLOW in {result.overflow}" if result.overflow else
                             f"{tightest.margin:.3g}x in {tightest.block}" if tightest else "-")
                    print(f"{name:8} {form_name:7} {'yes' if rewrite else 'no':8} {result.arithmetic.value:18} "
                          f"{where[:48]:48} {result.comparison.max_abs_rel:.1e}")


if __name__ == "__main__":
    main()
