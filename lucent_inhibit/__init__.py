"""lucent-inhibit: see and measure inhibition in vision models, as a plugin for Lucent.

Images are float tensors (B, 3, H, W) in [0, 1]; the library applies each model's input normalisation
exactly as ``lucent.optvis.render.render_vis(preprocess=True)`` does. Layers are Lucent layer names.

Public names are loaded lazily (PEP 562), so ``import lucent_inhibit`` and the command line's ``--help``
do not import torch-heavy modules until a name is used.
"""
from __future__ import annotations

import importlib
import importlib.util

__version__ = "0.2.0"

#: module -> the public names it defines (under those same names). Renaming a module is a change of its
#: key here, one line (as scan -> scanning and completeness -> completeness_check were).
_EXPORTS = {
    "hooks": ["AmbiguousLayerError", "capture", "get_layer", "layers"],
    "models": ["block_outputs", "efficientnet_lite0", "inceptionv1", "load_model", "preactivation_layers",
               "prepare", "preprocess_fn"],
    "data": ["ImageFolder", "imagenet_classes", "load_image", "sample_crops", "sample_images"],
    "features": ["Feature"],
    "attribution": ["Attribution", "attribute", "measure", "signed_totals", "tension"],
    "rendering": ["NonFiniteLoss", "RenderSettings"],
    "results": ["Result", "ResultFileError", "load_result"],
    "scanning": ["ScanResult", "merge_scans", "scan"],
    "census": ["Census", "layer_census", "plot_census"],
    "disinhibition": ["Disinhibition", "disinhibit"],
    "inhibitors": ["InhibitorDictionary", "inhibitor_dictionary", "plot_disinhibition", "plot_inhibitors"],
    "plots": ["plot_image_grid", "plot_scan_overlay", "plot_scan_scatter", "plot_signed_overlay", "save_scan_figures"],
    "completeness_check": ["CompletenessResult", "completeness", "completeness_pair", "plot_completeness", "random_logits",
                     "warn_if_incomplete"],
    "atlas": ["Atlas", "AtlasGrid", "AtlasIcons", "AtlasLayout", "AtlasPoints", "Selection", "build_atlas",
              "collect_vectors", "grid_cells", "plot_atlas", "project_layout", "render_icons", "select_images",
              "write_atlas_html"],
    "toy": ["ToyAnalysis", "ToyConfig", "ToyModel", "TrainResult", "analyze_toy", "inhibition_model",
            "plot_superposition", "train_toy"],
    "accentuation": ["Accentuation", "accentuate"],
    "inversion": ["InversionResult", "inversions", "plot_inversions"],
    "synthesis": ["TenseResult", "plot_tense", "tense_image"],
    "combinations": ["AxisScales", "CombinationResult", "PairStatistics", "axis_scales", "pair_cloud",
                     "pair_statistics", "plot_combinations", "sweep_combinations"],
    "report": ["DemoConfig", "run_demo"],
}
#: subpackages and modules exported as themselves
_SUBMODULES = ["objectives", "param", "stages", "transform"]
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

#: the public names, literally (tests check it equals the table above)
__all__ = [
    "Accentuation", "AmbiguousLayerError", "Atlas", "AtlasGrid", "AtlasIcons", "AtlasLayout", "AtlasPoints",
    "Attribution", "AxisScales", "Census", "CombinationResult", "CompletenessResult", "DemoConfig", "Disinhibition", "Feature",
    "ImageFolder", "InhibitorDictionary", "InversionResult", "NonFiniteLoss", "PairStatistics", "RenderSettings", "Result", "ResultFileError",
    "ScanResult", "Selection", "TenseResult", "ToyAnalysis", "ToyConfig", "ToyModel", "TrainResult", "accentuate",
    "analyze_toy", "attribute", "axis_scales", "block_outputs", "build_atlas", "capture", "collect_vectors",
    "completeness", "completeness_pair", "disinhibit", "efficientnet_lite0", "get_layer", "grid_cells", "imagenet_classes",
    "inceptionv1", "inhibition_model", "inhibitor_dictionary", "inversions", "layer_census", "layers", "load_image", "load_model", "load_result", "measure",
    "merge_scans", "pair_cloud", "pair_statistics", "plot_atlas", "plot_census", "plot_combinations", "plot_completeness",
    "plot_disinhibition", "plot_image_grid", "plot_inhibitors", "plot_inversions", "plot_scan_overlay", "plot_scan_scatter", "plot_signed_overlay",
    "plot_superposition", "plot_tense", "preactivation_layers", "prepare", "preprocess_fn", "project_layout",
    "random_logits", "render_icons", "run_demo", "sample_crops", "sample_images", "save_scan_figures", "scan",
    "select_images", "signed_totals", "sweep_combinations", "tense_image", "tension", "train_toy",
    "warn_if_incomplete", "write_atlas_html", "objectives", "param", "stages", "transform",
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name not in _WHERE:
        raise AttributeError(f"module 'lucent_inhibit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    if importlib.util.find_spec(f"{__name__}.{name}") is None:
        globals()[name] = value  # cached (never over a submodule's name: importing it would replace it)
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
