"""Attribution atlas and activation atlas (Hamblin et al. 2024, section 4; Carter et al. 2019).

A global picture of the ways a dataset excites and inhibits one feature, built in six stages, one
function each, each returning a :class:`~lucent_inhibit.core.results.Result` (``save`` / ``load`` /
``summary`` / ``plot``):

1. :func:`select_images` (:class:`Selection`, :mod:`.selection`): pick images from a
   :class:`~lucent_inhibit.scanning.result.ScanResult` by criteria (top-k ``|S|_2``, top / bottom-k activation,
   top-k tension; their union).
2. :func:`collect_vectors` (:class:`AtlasPoints`, :mod:`.vectors`): for every selected image its
   attribution ``S_l = grad_{h_l} f * h_l`` (``kind="attribution"``) or its activation ``h_l``
   (``kind="activation"``: the activation atlas) at layer ``l``, cropped to the feature's receptive-field
   box, summed over space to one C-vector per image (``mode="sum"``) or one per position (``"position"``);
   written batch by batch into preallocated arrays, the whole maps held until the box is known in memory
   up to a budget, else in a temporary file (:mod:`.spool`), so the peak memory is about the points'.
3. :func:`project_layout` (:class:`AtlasLayout`, :mod:`.layout`): UMAP (cosine metric, optional PCA
   first) to 2-D, the 1st..99th percentiles mapped onto the unit square.
4. :func:`grid_cells` (:class:`AtlasGrid`, :mod:`.layout`): a grid over the unit square; every cell with
   at least ``min_points`` points gets the mean of its vectors. Without a side given, the finest grid (at
   most 30) that is a dense mosaic of the layout (:func:`auto_grid_size`); a grid too fine is refused.
5. :func:`render_icons` (:class:`AtlasIcons`, :mod:`.icons`): one icon per cell, all cells of a chunk in
   one batch of Lucent's ``render_vis`` with the spatial cosdot objective against the cell's averaged
   vector (its absolute value for attributions), then the feature and the cosine to the target measured on
   every icon; icons are shown cut to the feature's receptive field (:func:`icon_crop`: the layer box's
   stride tiles, :func:`receptive_field_box`; on a vision transformer's token layer the targeted patches
   plus what attention mixes in, measured as the icons' input-gradient footprint, :mod:`.footprint`) and
   enlarged (:meth:`AtlasIcons.crops`), with their RMS contrast stored. Control
   (:func:`member_cosines`, :mod:`.control`): the same cosine for each cell's own dataset images.
6. :func:`plot_atlas` (static PNG, :mod:`.figure`) and :func:`write_atlas_html` (one self-contained
   interactive page, :mod:`.html`): frames coloured by the icon's activation (or the cell's net attribution).

:func:`build_atlas` (:mod:`.build`) runs stages 1-5 with an :class:`AtlasConfig` and one
:class:`~lucent_inhibit.RenderSettings`, and returns an :class:`Atlas` (one ``.npz``). Every layer is read
through :func:`lucent_inhibit.core.hooks.capture`, so the vectors, the render and the icon measurement see the
same tensor for a layer name; a layer whose module runs more than once per forward pass is refused.
"""
from .build import Atlas, AtlasConfig, build_atlas
from .control import member_cosines
from .figures import FRAMES, frame_values, plot_atlas
from .footprint import FOOTPRINT_CROP, gradient_footprint, tile_box, token_crop
from .html import atlas_html, write_atlas_html
from .icons import (ICON_TRANSFORMS, AtlasIcons, icon_crop, icon_settings, measure_icons, receptive_field_box,
                    render_batch, render_icons, rms_contrast)
from .layout import (MIN_UMAP_POINTS, AtlasGrid, AtlasLayout, auto_grid_size, check_grid_size, grid_cells,
                     normalize_layout, project_layout)
from .selection import CRITERIA, Selection, select_images
from .targets import ICON_TARGETS, icon_targets, target_cosine, zoom_transform
from .vectors import KINDS, MODES, AtlasPoints, collect_vectors, layer_grid, layer_map, read_layer, selection_indices

__all__ = [
    "Atlas", "AtlasConfig", "AtlasGrid", "AtlasIcons", "AtlasLayout", "AtlasPoints", "CRITERIA", "FOOTPRINT_CROP",
    "FRAMES", "ICON_TARGETS", "ICON_TRANSFORMS", "KINDS", "MIN_UMAP_POINTS", "MODES", "Selection", "atlas_html",
    "auto_grid_size", "build_atlas", "check_grid_size", "collect_vectors", "frame_values", "gradient_footprint",
    "grid_cells", "icon_crop", "icon_settings", "icon_targets", "layer_grid", "layer_map", "measure_icons",
    "member_cosines",
    "normalize_layout", "plot_atlas", "project_layout", "read_layer", "receptive_field_box", "render_batch",
    "render_icons", "rms_contrast", "select_images", "selection_indices", "target_cosine", "tile_box", "token_crop",
    "write_atlas_html", "zoom_transform",
]
