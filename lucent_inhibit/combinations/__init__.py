"""Feature-combination plots with the cosdot objective (Hamblin, Alvarez & Konkle, paper 004; SPEC 2.7).

Which combinations of two features can a model represent? For a pair ``(f_a, f_b)``:

1. :func:`pair_statistics` (:mod:`.statistics`) measures, over a dataset, every unit of a layer at one
   position and their correlations, and picks pairs: most correlated, most anti-correlated, closest to
   zero correlation. Maps (B, C, H, W), linear layers (B, C) and the token layers (B, T, C) of vision
   transformers are read as :class:`~lucent_inhibit.core.features.Feature` reads them (on token layers:
   ``"cls"``, ``("token", i)``, a patch ``(y, x)``, ``"center"`` or ``"mean"`` over the patch tokens, with the
   model's token layout, :func:`lucent_inhibit.core.tokens.token_grid`); the features it hands out carry that
   position and layout into the scales and the sweep.
2. :func:`axis_scales` (:mod:`.scales`) renders each feature alone (both in one batch of Lucent's render
   loop) and measures its unconstrained maximum ``s``; the pair is studied in scaled units
   ``y = [f_a/s_a, f_b/s_b]``.
3. :func:`sweep_combinations` (:mod:`.sweeps`) maximises ``C(y, theta) = dot(y, h) * |cos(y, h)|^p`` with
   ``h = [cos theta, sin theta]`` for ``n_angles >= 5`` angles on [0, 2 pi) and ``n_seeds`` noise seeds,
   every (angle, seed) one element of a batch of ``render_vis``.
4. :func:`plot_combinations` (:mod:`.figure`) draws the paper's figure from the :class:`CombinationResult`.

Rendering: both render stages take one ``render=`` :class:`~lucent_inhibit.core.settings.RenderSettings`
(None: steps=128, lr=0.05, seed=0, a 128-px image, Lucent's standard transforms, Lucent's ``param.image``)
and render through :func:`lucent_inhibit.core.rendering.run_render`, which leaves no hooks on the model.

Measuring: all values stored in the results are measured with a separate forward pass (no gradients, no
augmentation) on the *final* rendered images, at the size the model saw during the render
(:func:`render_size`: the one input size of a model that takes no other, e.g. a timm ViT's, else
``render.model_size``, else Lucent's upsampling of images smaller than 224 px to 224), so ``"center"``,
``(y, x)`` and token positions mean the same neurons in the render and in the measurement. Dataset
activations (the grey cloud) should be measured on images of that same size (e.g.
``sample_crops(size=result.render_size[0])``).
"""
from .figures import plot_combinations
from .scales import DEFAULT_SIZE, AxisScales, NotExcitable, axis_scales, render_size, seeded_image_param
from .statistics import PairStatistics, correlation_matrix, measure_pair, pair_cloud, pair_statistics
from .sweeps import MIN_ANGLES, QUADRANTS, CombinationResult, check_angles, sweep_combinations

__all__ = [
    "AxisScales",
    "CombinationResult",
    "DEFAULT_SIZE",
    "MIN_ANGLES",
    "NotExcitable",
    "PairStatistics",
    "QUADRANTS",
    "axis_scales",
    "check_angles",
    "correlation_matrix",
    "measure_pair",
    "pair_cloud",
    "pair_statistics",
    "plot_combinations",
    "render_size",
    "seeded_image_param",
    "sweep_combinations",
]
