"""Tense synthesis: render maximally tense images ("Understanding Inhibition Through Maximally Tense
Images", Hamblin, Saha, Konkle, Alvarez 2024; SPEC 2.4).

:func:`tense_image` renders the :func:`~lucent_inhibit.synthesis.objectives.tense` objective (the tension of the
image's excitatory total ``P`` and inhibitory total ``N`` at an attribution layer) with Lucent's
``render_vis`` through :func:`lucent_inhibit.core.rendering.run_render`, and measures P, N and the feature on
the clean image along the way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch
from lucent.optvis.objectives import as_objective

from ..attribution.attribute import attribute
from ..core.features import Feature, as_feature, check_images
from ..core.layers import check_layer_names, model_device
from ..core.motion import motion_fields
from ..core.rendering import rng_restored, run_render
from ..core.results import Result
from ..core.settings import RenderSettings
from ..core.tokens import required_input_size
from ..core.validate import MAX_BATCH, MAX_STEPS, InputError, check_int
from . import param as _param
from .accentuation import check_objective, stage_settings
from .objectives import tense

#: The image side of a tense synthesis when ``render.size`` is None.
DEFAULT_SIZE = 128


@dataclass
class TenseResult(Result):
    """Result of :func:`tense_image`.

    Attributes:
        images: (B, 3, H, W) synthesised images in [0, 1].
        steps: (K,) steps at which the clean image was measured (0 = start, last = end).
        positive, negative, activation: (K, B) P, N at ``layer`` (L1 sums, units of the feature) and the
            feature's value at those steps.
        feature, layer: the feature and the attribution layer.
        score: the tension score (``"custom"`` for a callable); mode: ``"fast"`` or ``"exact"`` (the mode used).
        moved: (B,) bool, whether each image moved (:mod:`lucent_inhibit.core.motion`; None: not measured);
        motion: (B, 2) float32 its ``[RMS image change, objective gain]``.
    """

    images: torch.Tensor
    steps: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    activation: torch.Tensor
    feature: Feature
    layer: str
    score: str
    mode: str
    moved: Optional[torch.Tensor] = None
    motion: Optional[torch.Tensor] = None

    @property
    def tension(self) -> torch.Tensor:
        """(K, B) tension of P and N at each measured step (``score``)."""
        from ..attribution.totals import tension as _tension

        return _tension(self.positive, self.negative, self.score)

    def summary(self) -> dict:
        """Tension, P, N and the feature of the first image at the first and last measured step."""
        t = self.tension[:, 0] if self.score != "custom" else None
        out = {"type": self.kind(), "images": list(self.images.shape), "feature": self.feature.name,
               "layer": self.layer, "score": self.score, "mode": self.mode, "steps": int(self.steps[-1])}
        for name, values in (("P", self.positive[:, 0]), ("N", self.negative[:, 0]), ("f", self.activation[:, 0]),
                             ("tension", t)):
            if values is not None:
                out[f"{name}_start"], out[f"{name}_end"] = float(values[0]), float(values[-1])
        return out

    def plot(self, path=None, ax=None, **style):
        """The images and their P / N / f trajectories (:func:`plot_tense`);
        returns the Figure (a PNG at ``path`` when given)."""
        from .figures import plot_tense

        return plot_tense(self, path, ax, **style)


def _tense_param(model, settings: RenderSettings, batch: int, seed_image):
    """(params, image_f) of ``batch`` images at the render size, from ``seed_image`` or from noise."""
    hw = settings.hw(DEFAULT_SIZE)
    if seed_image is not None:
        seed_image = _param.check_seed(check_images(seed_image), hw, batch).to(model_device(model))
    with rng_restored(settings.seed):
        return _param.build(settings.param, hw, seed=seed_image, batch=batch, device=model_device(model))


def tense_image(
    model: torch.nn.Module,
    feature,
    layer: str,
    render: Optional[RenderSettings] = None,
    score: str = "min",
    mode: str = "auto",
    batch: int = 1,
    seed_image: Optional[torch.Tensor] = None,
    extra=None,
    record_every: int = 8,
) -> TenseResult:
    """Synthesise maximally tense images: render :func:`~lucent_inhibit.synthesis.objectives.tense` with render_vis.

    Args:
        model, feature, layer: as in :func:`~lucent_inhibit.synthesis.objectives.tense` (``layer`` feeds the feature).
        render: :class:`~lucent_inhibit.core.settings.RenderSettings` (None: ``RenderSettings()``: 128 steps,
            lr 0.05, seed 0). Stage defaults where a setting is None: ``size`` 128 px (``DEFAULT_SIZE``),
            ``model_size`` the render size (the model sees the image unresized), ``param="fourier"``
            (seeded from ``seed_image`` when one is given), ``transforms`` Lucent's ``standard_transforms``.
        score, mode: tension score and gradient mode of the objective (``"auto"``: fast where it is exact,
            decided at the first step; the result's ``mode`` records the mode used).
        batch: images rendered together (1 to ``validate.MAX_BATCH``).
        seed_image: optional start image (3, H, W) in [0, 1] (else noise), resized to the render size.
        extra: an objective added to the loss (e.g. ``0.1 * lucent.optvis.objectives.channel(...)``).
        record_every: measure P, N and the feature on the clean image every this many steps (1 to
            ``validate.MAX_STEPS``).

    Returns:
        :class:`TenseResult` with the images and the P / N / f trajectory.
    """
    feature = as_feature(feature)
    batch, every = check_int("batch", batch, 1, MAX_BATCH), check_int("record_every", record_every, 1, MAX_STEPS)
    if extra is not None and not (callable(extra) or isinstance(extra, str) and ":" in extra):
        raise InputError(f"extra must be a Lucent Objective, a callable T -> loss, 'layer:channel' or None, got "
                         f"{extra!r:.60}")
    check_layer_names(model, [feature.layer], allow=())  # a misspelt name is unknown, not "not computed"
    check_layer_names(model, [layer])
    settings = stage_settings(render, (DEFAULT_SIZE, DEFAULT_SIZE), "fourier")
    if extra is not None:
        check_objective(model, as_objective(extra), settings.model_hw(settings.hw(DEFAULT_SIZE), model),
                        "extra objective")
    used = {"mode": mode}
    objective = tense(feature, layer, score=score, mode=mode, on_choice=lambda m, cos: used.update(mode=m))
    if extra is not None:
        objective = objective + as_objective(extra)
    params, image_f = _tense_param(model, settings, batch, seed_image)
    rec: Dict[str, list] = {"step": [], "P": [], "N": [], "f": []}

    need = required_input_size(model)

    def measure(step):
        with torch.no_grad():
            x = image_f().detach().clamp(0, 1)
            if need is not None and tuple(x.shape[2:]) != need:  # measured at the size the render fed the model
                x = torch.nn.functional.interpolate(x, size=need, mode="bilinear", align_corners=True)
        a = attribute(model, x, feature, layer)
        rec["step"].append(step)
        rec["P"].append(a.positive(layer).cpu())
        rec["N"].append(a.negative(layer).cpu())
        rec["f"].append(a.activation.cpu())

    run = run_render(model, objective, (params, image_f), settings, "tense_image",
                     callback=lambda step: measure(step) if step % every == 0 else None)
    measure(int(settings.steps))
    return TenseResult(
        run.images, torch.tensor(rec["step"]), torch.stack(rec["P"]), torch.stack(rec["N"]), torch.stack(rec["f"]),
        feature, layer, score if isinstance(score, str) else "custom", used["mode"], *motion_fields(run.motion),
    )

