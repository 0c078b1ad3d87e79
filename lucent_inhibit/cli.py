"""The ``lucent-inhibit`` command: one sub-command per stage of the papers' pipeline.

Each stage is a pair of functions in this module: ``_add_<stage>(subparsers)`` declares its options
(with help that explains each), ``_run_<stage>(args)`` runs it. Errors in user input print one clear
line (``lucent-inhibit: error: ...``) and exit with status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional


class UsageError(Exception):
    """Bad user input: printed as one line, exit status 2."""


# ------------------------------------------------------------------------------------------------
# shared options
# ------------------------------------------------------------------------------------------------
def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="model spec: 'efficientnet_lite0' (embedded ImageNet weights, default), 'inceptionv1', "
        "'torchvision:NAME', 'timm:NAME' or 'package.module:constructor'",
    )
    p.add_argument("--device", default="cpu", help="torch device, e.g. 'cpu' or 'cuda' (default: cpu)")


def _add_data_options(p: argparse.ArgumentParser, n_default: int = 128, size_default: int = 224) -> None:
    p.add_argument(
        "--images",
        default=None,
        help="folder of your own images (recursive); default: deterministic crops of the bundled photos",
    )
    p.add_argument("--n-images", type=int, default=n_default, help=f"number of bundled crops (default {n_default})")
    p.add_argument("--size", type=int, default=size_default, help=f"image side in pixels (default {size_default})")
    p.add_argument("--seed", type=int, default=0, help="seed of the bundled crops (default 0)")


def _load_model(args):
    from .models import load_model

    try:
        model = load_model(args.model)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return model.to(args.device)


def _load_data(args):
    from .data import ImageFolder, sample_crops

    if args.images:
        try:
            return ImageFolder(args.images, size=args.size)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(str(exc)) from exc
    return sample_crops(args.n_images, size=args.size, seed=args.seed)


def _check_layer(model, layer: str) -> None:
    from .models import layers, unknown_layer_message

    if layer not in layers(model) and layer != "input":
        raise UsageError(unknown_layer_message(layer, layers(model)))


# ------------------------------------------------------------------------------------------------
# stages (each: _add_<stage>, _run_<stage>)
# ------------------------------------------------------------------------------------------------
STAGES: List[str] = []


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lucent-inhibit",
        description="See and measure inhibition in vision models (Lucent plugin). Every stage runs on the "
        "embedded pretrained EfficientNet-Lite0 and bundled images by default.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    sub.required = True
    module = sys.modules[__name__]
    for stage in STAGES:
        getattr(module, f"_add_{stage}")(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    runner = getattr(sys.modules[__name__], f"_run_{args.stage}")
    try:
        runner(args)
    except UsageError as exc:
        print(f"lucent-inhibit: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
