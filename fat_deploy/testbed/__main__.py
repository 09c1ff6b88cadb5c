"""``python -m fat_deploy.testbed``: build (or retrain) the test bed and print its record."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from fat_deploy.errors import FatDeployError
from fat_deploy.testbed import SHIPPED, build, save_weights
from fat_deploy.testbed.recipe import EPOCHS


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fat_deploy.testbed",
                                     description="The trained FAT-B0 test bed: built from the repository's weights "
                                                 "(or trained), cached, its record printed.")
    parser.add_argument("--cache", type=Path, help="cache folder (default ~/.cache/fat-deploy/testbed)")
    parser.add_argument("--weights", type=Path, help=f"weights with their record beside them (default {SHIPPED} "
                                                     "where it exists, else training)")
    parser.add_argument("--train", action="store_true", help="train anew (about 240 CPU-seconds)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="with --train")
    parser.add_argument("--save-weights", type=Path, metavar="DIR",
                        help="with --train: write the weights and their record to DIR (the repository's testbed/)")
    parser.add_argument("--force", action="store_true", help="with --save-weights: replace the files there")
    args = parser.parse_args(argv)
    if (args.save_weights or args.epochs != EPOCHS) and not args.train:
        parser.error("--save-weights and --epochs go with --train")
    if args.train and args.weights:
        parser.error("--weights and --train exclude each other")
    if args.save_weights and args.epochs != EPOCHS:
        parser.error(f"--save-weights keeps the recipe's training only ({EPOCHS} epochs)")
    try:
        bed = build(args.cache, args.weights, train_anew=args.train, epochs=args.epochs, log=True)
        print(json.dumps({"folder": str(bed.folder), **bed.record}, indent=2, default=str))
        if args.save_weights:
            print(f"saved {save_weights(bed, args.save_weights, args.force)}")
    except FatDeployError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # an unwritable cache or --save-weights folder
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
