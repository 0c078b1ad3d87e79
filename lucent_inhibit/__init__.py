"""lucent-inhibit: see and measure inhibition in vision models, as a plugin for Lucent.

Images are float tensors (B, 3, H, W) in [0, 1]; the library applies each model's input normalisation
exactly as ``lucent.optvis.render.render_vis(preprocess=True)`` does. Layers are Lucent layer names.

Modules read like the papers' table of contents:
``models`` (embedded EfficientNet-Lite0, InceptionV1, layer names), ``data`` (bundled images),
``attribution`` (features, S = grad x activation, P/N, tension), ``completeness``, ``scan`` (MEIs, MIIs,
MTIs), ``objectives`` / ``param`` / ``transform`` (render-loop building blocks), ``accentuation``
(feature accentuation, +/- inversions, tense synthesis), ``atlas``, ``combinations`` (cosdot pair
plots), ``toy`` (superposition), ``plots``, ``cli``.
"""
from .models import (
    block_outputs,
    efficientnet_lite0,
    get_layer,
    inceptionv1,
    layers,
    load_model,
    preactivation_layers,
    prepare,
    preprocess_fn,
)
from .data import ImageFolder, imagenet_classes, load_image, sample_crops, sample_images
from .attribution import Attribution, Feature, attribute, measure, signed_totals, tension
from . import objectives, param, transform

__version__ = "0.1.0"

from .scan import ScanResult, merge as merge_scans, scan
from .plots import plot_image_grid, plot_scan_overlay, plot_scan_scatter, plot_signed_overlay, save_scan_figures
from .completeness import CompletenessResult, completeness, completeness_pair, plot_completeness, random_logits, warn_if_incomplete
from .atlas import Atlas, AtlasGrid, AtlasIcons, AtlasLayout, AtlasPoints, Selection, build_atlas, collect_vectors, grid_cells, plot_atlas, project_layout, render_icons, select_images, write_atlas_html
from .toy import ToyAnalysis, ToyConfig, ToyModel, TrainResult, analyze as analyze_toy, inhibition_model, plot_superposition, train as train_toy
from .accentuation import Accentuation, InversionResult, NonFiniteLoss, TenseResult, accentuate, inversions, plot_inversions, plot_tense, tense_image
from .combinations import AxisScales, CombinationResult, PairStatistics, axis_scales, pair_cloud, pair_statistics, plot as plot_combinations, sweep as sweep_combinations
from .report import DemoConfig, run_demo

__all__ = [n for n in dir() if not n.startswith("_")]
