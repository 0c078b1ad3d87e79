"""lucent-inhibit: see and measure inhibition in vision models, as a plugin for Lucent.

Images are float tensors (B, 3, H, W) in [0, 1]; the library applies each model's input normalisation
exactly as ``lucent.optvis.render.render_vis(preprocess=True)`` does. Layers are Lucent layer names.

Public names are loaded lazily (PEP 562), so ``import lucent_inhibit`` and the command line's ``--help``
do not import torch-heavy modules until a name is used.
"""
import importlib as _importlib

__version__ = "0.2.0"

#: subpackage or module -> the public names it defines or re-exports (under those same names).
_EXPORTS = {
    "core.layers": ["AmbiguousLayerError", "get_layer", "layers"],
    "core.hooks": ["capture"],
    "core.features": ["Feature"],
    "core.preparation": ["prepare", "preprocess_fn"],
    "core.rendering": ["NonFiniteLoss"],
    "core.settings": ["PassSettings", "RenderSettings"],
    "core.results": ["Result", "ResultFileError", "load_result"],
    "models.loading": ["load_model"],
    "models.embedded": ["efficientnet_lite0"],
    "models.inception": ["inceptionv1"],
    "models.layers": ["block_outputs", "preactivation_layers"],
    "models.defaults": ["default_attribution_layer", "default_feature_layers", "pick_unit", "resolve_feature_layers"],
    "data": ["ImageFolder", "imagenet_classes", "load_image", "sample_crops", "sample_images"],
    "attribution": ["Attribution", "CompletenessResult", "attribute", "completeness", "completeness_pair", "measure",
                    "plot_completeness", "random_logits", "signed_totals", "tension", "warn_if_incomplete"],
    "scanning": ["ScanResult", "merge_scans", "plot_image_grid", "plot_scan_overlay", "plot_scan_scatter",
                 "plot_signed_overlay", "save_scan_figures", "scan"],
    "census": ["Census", "layer_census", "plot_census"],
    "causal": ["Disinhibition", "InhibitorDictionary", "disinhibit", "inhibitor_dictionary", "plot_disinhibition",
               "plot_inhibitors", "RandomizationCascade", "plot_randomization", "randomization_cascade"],
    "synthesis": ["Accentuation", "InversionResult", "TenseResult", "accentuate", "inversions", "plot_inversions",
                  "plot_tense", "tense_image"],
    "atlas": ["Atlas", "AtlasGrid", "AtlasIcons", "AtlasLayout", "AtlasPoints", "Selection", "build_atlas",
              "collect_vectors", "grid_cells", "plot_atlas", "project_layout", "render_icons", "select_images",
              "write_atlas_html"],
    "combinations": ["AxisScales", "CombinationResult", "PairStatistics", "axis_scales", "pair_cloud",
                     "pair_statistics", "plot_combinations", "sweep_combinations"],
    "toy": ["ToyAnalysis", "ToyConfig", "ToyModel", "TrainResult", "analyze_toy", "inhibition_model",
            "plot_superposition", "train_toy"],
    "microscope": ["Microscope", "build_microscope", "plot_microscope", "write_microscope_site"],
    "findings": ["Finding"],
    "app.stages.demo": ["DemoConfig", "run_demo"],
}
#: subpackages exported as themselves, under a short name
_SUBMODULES = {"objectives": "synthesis.objectives", "param": "synthesis.param", "transform": "synthesis.transform",
               "stages": "app.stages", "findings": "findings",
               "microscope": "microscope"}
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
    "Finding", "PassSettings", "RandomizationCascade", "plot_randomization", "randomization_cascade", "default_attribution_layer", "default_feature_layers", "findings", "pick_unit", "resolve_feature_layers",
    "Microscope", "build_microscope", "microscope", "plot_microscope", "write_microscope_site",
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return _importlib.import_module(f".{_SUBMODULES[name]}", __name__)
    if name not in _WHERE:
        raise AttributeError(f"module 'lucent_inhibit' has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # cached: no public name is also a subpackage's (a test checks)
    return value


def __dir__():
    """The public names (what ``__all__`` lists) and the version; no implementation details."""
    return sorted(__all__ + ["__version__"])
