"""The feature-combination sweep with the cosdot objective (Hamblin, Alvarez & Konkle, paper 004; SPEC 2.7).

:func:`sweep_combinations` maximises ``C(y, theta) = dot(y, h) * |cos(y, h)|^p`` with
``h = [cos theta, sin theta]`` and ``y = [f_a / s_a, f_b / s_b]`` for ``n_angles`` angles
``theta_k = 2 pi k / n_angles`` and ``n_seeds`` noise seeds. Every (angle, seed) is one element of a batch
of ``render_vis`` (:func:`lucent_inhibit.synthesis.objectives.feature_pair` takes one angle per batch element), in
chunks of at most ``chunk`` elements, instead of one render per angle and seed.

Quadrants: :meth:`CombinationResult.quadrant_scores` averages C over the angles strictly inside each
quadrant. With 4 angles every angle lies on an axis and no quadrant has an angle inside it, so the sweep
needs ``n_angles >= 5`` (with 5 or more evenly spaced angles every open quadrant holds at least one);
smaller values are refused.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..core.checkpoints import checkpointed
from ..core.distributed import digest, init_from_env, map_chunks, rank0_seed
from ..core.features import Feature, as_feature
from ..core.motion import Motion, motion_fields
from ..core.results import Result
from ..core.settings import RenderSettings
from ..core.validate import MAX_BATCH, MAX_IMAGES, MAX_STEPS, InputError, check_int
from ..synthesis.objectives import check_power, cosdot_value, feature_pair, pair_targets
from .scales import DEFAULT_SIZE, axis_scales, base_seed, check_pair, check_scale, render_batch, render_info, settings
from .statistics import measure_pair

log = logging.getLogger(__name__)

#: Quadrant q holds the angles in (q pi/2, (q+1) pi/2), named by the signs of (y_a, y_b) there.
QUADRANTS = ("++", "-+", "--", "+-")
#: The fewest angles for which every open quadrant holds an angle ``2 pi k / n``.
MIN_ANGLES = 5


@dataclass
class CombinationResult(Result):
    """A feature-combination sweep (paper 004).

    Attributes:
        feature_a, feature_b: the pair.
        theta: (K,) target angles in radians, ``2 pi k / K``; target ``h = [cos theta, sin theta]``.
        values: (K, S, 2) raw ``(f_a, f_b)`` measured on the final image of each angle and seed.
        scale: ``(s_a, s_b)`` the axis scales (raw units).
        score: (K, S) ``C(values / scale, theta; power)``.
        images: (K, 3, H, W) the image of the best seed (largest C) for each angle, in [0, 1].
        power: the cosine exponent ``p``.
        scale_images: (2, 3, H, W) the features' own visualizations (the axis tips), or None.
        info: steps, image_size, render_size ((H, W) the model saw), lr, seed, chunk, model name.
        moved: (K,) bool, whether each angle's best image moved (:mod:`lucent_inhibit.core.motion`; None: not
            measured); motion: (K, 2) float32 its ``[RMS image change, objective gain]``.
    """

    feature_a: Feature
    feature_b: Feature
    theta: torch.Tensor
    values: torch.Tensor
    scale: Tuple[float, float]
    score: torch.Tensor
    images: torch.Tensor
    power: float = 4.0
    scale_images: Optional[torch.Tensor] = None
    info: Dict[str, Any] = field(default_factory=dict)
    moved: Optional[torch.Tensor] = None
    motion: Optional[torch.Tensor] = None

    def __post_init__(self):
        self.scale = tuple(float(v) for v in self.scale)
        self.power = float(self.power)

    @property
    def n_angles(self) -> int:
        return self.theta.shape[0]

    @property
    def n_seeds(self) -> int:
        return self.values.shape[1]

    @property
    def render_size(self) -> Tuple[int, int]:
        """(H, W) of the model input during the render (and the measurement), pixels; (0, 0) if unknown."""
        return tuple(int(v) for v in self.info.get("render_size", (0, 0)))

    @property
    def scaled(self) -> torch.Tensor:
        """(K, S, 2) values in axis units (``f / s``)."""
        return self.values / torch.tensor(self.scale, dtype=self.values.dtype)

    @property
    def best_seed(self) -> torch.Tensor:
        """(K,) the seed with the largest C at each angle."""
        return self.score.argmax(1)

    @property
    def best(self) -> torch.Tensor:
        """(K, 2) the scaled point of the best seed at each angle."""
        return self.scaled[torch.arange(self.n_angles), self.best_seed]

    @property
    def mean_score(self) -> torch.Tensor:
        """(K,) mean C over seeds: the red loop's radius."""
        return self.score.mean(1)

    def quadrant_scores(self) -> Dict[str, float]:
        """Mean of :attr:`mean_score` over the angles strictly inside each quadrant, keyed by the signs of
        ``(y_a, y_b)`` there: ``"++"`` (both positive), ``"-+"``, ``"--"``, ``"+-"`` (NaN for a quadrant
        without an angle inside, which a sweep of ``n_angles >= 5`` never has)."""
        th = self.theta.double() % (2 * math.pi)
        out = {}
        for q, name in enumerate(QUADRANTS):
            lo, hi = q * math.pi / 2, (q + 1) * math.pi / 2
            inside = (th > lo + 1e-6) & (th < hi - 1e-6)
            out[name] = float(self.mean_score[inside].mean()) if bool(inside.any()) else float("nan")
        return out

    def summary(self) -> Dict[str, Any]:
        """The pair, its scales, the grid, the mean C per quadrant and overall, and the render settings."""
        return {"type": self.kind(), "feature_a": self.feature_a.name, "feature_b": self.feature_b.name,
                "scale": list(self.scale), "n_angles": self.n_angles, "n_seeds": self.n_seeds,
                "power": self.power, "quadrant_scores": self.quadrant_scores(),
                "mean_score": float(self.score.mean()), "info": self.info}

    def plot(self, path=None, ax=None, **style):
        """The paper's figure (:func:`plot_combinations`; ``cloud=`` adds the dataset's); returns the Figure
        (a PNG at ``path`` when given)."""
        from .figures import plot_combinations

        return plot_combinations(self, path, ax, **style)


def check_angles(n_angles) -> int:
    """``n_angles`` as an int in [:data:`MIN_ANGLES`, ``validate.MAX_IMAGES``], else ``ValueError`` (one that
    explains the quadrant rule when it is not an integer >= :data:`MIN_ANGLES`)."""
    try:
        n = check_int("n_angles", n_angles, low=MIN_ANGLES)
    except ValueError:
        raise InputError(
            f"n_angles must be an integer >= {MIN_ANGLES}, got {n_angles!r}: the angles are 2 pi k / n_angles, "
            "and with 4 or fewer no angle lies strictly inside every quadrant, so the quadrant scores would be "
            "undefined"
        ) from None
    return check_int("n_angles", n, MIN_ANGLES, MAX_IMAGES)


def per_image_pair(fa: Feature, fb: Feature, theta: np.ndarray, power: float, scale):
    """:func:`~lucent_inhibit.synthesis.objectives.feature_pair` for a batch of angles ``theta`` (B,) radians, its
    loss unchanged (minus the batch mean of C), with each image's C recorded per step as ``"objective/<i>"``
    (unitless cosdot of the scaled pair), so that each render's gain is its own
    (:func:`~lucent_inhibit.core.motion.measure_motion`)."""
    from ..core.rendering import Parts
    from ..synthesis.objectives.cosdots import pair_values

    objective = feature_pair(fa, fb, theta=theta, power=power, scale=scale)
    targets = pair_targets(theta)

    def parts(T):
        loss = objective(T)
        with torch.no_grad():
            y = pair_values(T, fa, fb, scale)
            c = cosdot_value(y, targets.to(y.device, y.dtype), power)
        return loss, {"objective": -loss.detach(), **{f"objective/{i}": v for i, v in enumerate(c)}}

    return Parts(parts)


def _render_chunks(model, fa, fb, theta, seeds, power, scale, chunk, render, size, checkpoint=None):
    """Render the flattened (angle, seed) grid in batches of ``chunk``: values (N, 2), images (N, 3, H, W),
    motion (N, 2) ``[RMS image change, objective gain]`` (None for chunks of an older checkpoint).
    Under ``torchrun`` each rank renders its share of the batches (:func:`~lucent_inhibit.core.distributed.map_chunks`;
    a batch's noise seeds are those of its elements, whatever the rank) and every rank gets them all. In one
    process, with ``checkpoint``, each batch is saved there as it finishes and reused by a rerun."""
    n = theta.shape[0]
    starts = list(range(0, n, chunk))
    bar = tqdm(total=n, disable=not render.progress, desc=f"combinations {fa.name} x {fb.name}", unit="img")
    render = render.replace(progress=False)  # one bar over the images, not one per chunk over the steps

    def one(c: int):
        idx = slice(starts[c], min(n, starts[c] + chunk))
        objective = per_image_pair(fa, fb, theta[idx].float().numpy(), power, scale)
        labels = [f"angle {math.degrees(float(t)):.0f} deg, seed {int(s)}" for t, s in zip(theta[idx], seeds[idx])]
        run = render_batch(model, objective, seeds[idx].tolist(), render, "combination sweep", labels)
        values = measure_pair(model, run.images, fa, fb, size=size)
        bar.update(run.images.shape[0])
        return {"values": values.float().cpu().numpy(), "images": run.images.float().cpu().numpy(),
                "motion": run.motion.table().numpy()}

    try:
        said = lambda: {"pair": [fa.to_dict(), fb.to_dict()], "theta": digest(theta), "seeds": digest(seeds),  # noqa: E731
                        "power": power, "scale": None if scale is None else [float(v) for v in scale],
                        "chunk": chunk, "size": size, "model": digest(model), "settings": render.describe()}
        if checkpoint is not None and init_from_env()[1] == 1:
            elements = [np.arange(a, min(n, a + chunk)) for a in starts]
            parts = checkpointed(checkpoint, "combination sweep", said(), elements, lambda c, idx: one(c),
                                 skipped=lambda idx: bar.update(len(idx)))
        else:
            parts = map_chunks(len(starts), one, said)
    finally:
        bar.close()
    values = torch.from_numpy(np.concatenate([p["values"] for p in parts]))
    images = torch.from_numpy(np.concatenate([p["images"] for p in parts]))
    has_motion = all("motion" in p for p in parts)  # chunks checkpointed by an older version have none
    return values, images, torch.from_numpy(np.concatenate([p["motion"] for p in parts])) if has_motion else None


def sweep_combinations(
    model: nn.Module,
    feature_a: Feature,
    feature_b: Feature,
    n_angles: int = 60,
    n_seeds: int = 5,
    power: float = 4.0,
    chunk: int = 60,
    scale: Optional[Tuple[float, float]] = None,
    scale_steps: Optional[int] = None,
    scale_seeds: int = 1,
    render: Optional[RenderSettings] = None,
    checkpoint: Optional[str] = None,
) -> CombinationResult:
    """Maximise the pair's cosdot toward ``n_angles`` angles from ``n_seeds`` noise seeds each.

    Args:
        model: a prepared model (eval mode).
        feature_a, feature_b: two different :class:`Feature` s (x and y axes).
        n_angles: number of target angles ``theta_k = 2 pi k / n_angles``, at least 5 (see the module
            notes); the paper: 60.
        n_seeds: noise seeds per angle (the paper: 5). Seed ``s`` starts every angle from the same noise.
            ``n_angles * n_seeds`` is at most ``validate.MAX_IMAGES``.
        power: the cosine exponent ``p`` (the paper: 4), 0 to ``objectives.MAX_POWER``.
        chunk: at most this many (angle, seed) images per ``render_vis`` batch (memory bound; at most
            ``validate.MAX_BATCH``).
        scale: ``(s_a, s_b)`` axis scales; ``None`` computes them with :func:`axis_scales` (``scale_seeds``
            seeds) with the same render settings, except ``scale_steps`` steps when given.
        render: :class:`RenderSettings` (None: the defaults, steps=128, lr=0.05, a 128-px image that
            Lucent upsamples to 224 for the model, Lucent's standard transforms, seed 0). ``param`` must be
            None, ``"lucent"`` (Lucent's ``param.image``) or ``"phase"`` (fixed magnitude, optimised phase;
            :data:`~lucent_inhibit.combinations.scales.SWEEP_PARAMS`); noise seed ``s`` of the sweep is
            ``render.seed + s`` (``render.seed=None``: a base seed drawn from torch's global RNG).
            ``progress`` shows a bar over the images.
        checkpoint: a folder where each rendered batch is saved as it finishes
            (:func:`lucent_inhibit.core.checkpoints.checkpointed`; one process only): a rerun with the same
            arguments after an interruption (SIGKILL included) resumes there and returns the same result.

    Returns:
        :class:`CombinationResult`: values (K, S, 2) and C (K, S) measured on the final images at the
        model-input size (no augmentation), the best image per angle.
    """
    fa, fb = as_feature(feature_a), as_feature(feature_b)
    K, S = check_angles(n_angles), check_int("n_seeds", n_seeds, 1, MAX_IMAGES)
    if K * S > MAX_IMAGES:
        raise InputError(f"n_angles * n_seeds must be <= {MAX_IMAGES}, got {K} * {S} = {K * S} images to render")
    chunk, power = check_int("chunk", chunk, 1, MAX_BATCH), check_power(power)
    scale_seeds = check_int("scale_seeds", scale_seeds, 1, MAX_BATCH // 2)
    scale = None if scale is None else check_scale(scale)
    if scale_steps is not None:
        scale_steps = check_int("scale_steps", scale_steps, 1, MAX_STEPS)
    s = settings(render)
    size = s.model_hw(DEFAULT_SIZE, model)  # the size run_render gives the model
    fa, fb = check_pair(model, fa, fb, size)
    s = s.replace(seed=rank0_seed(base_seed(s)))  # under torchrun: rank 0's seed on every rank

    scale_images = None
    if scale is None:
        scales = axis_scales(model, fa, fb, n_seeds=scale_seeds,
                             render=s if scale_steps is None else s.replace(steps=scale_steps))
        scale, scale_images = scales.scale, scales.images
        log.info("axis scales: %s = %.4g, %s = %.4g", fa.name, scale[0], fb.name, scale[1])

    theta = torch.arange(K, dtype=torch.float64) * (2 * math.pi / K)
    # element e of the flattened sweep: angle e // S, seed e % S
    seeds = torch.arange(S).repeat(K) + s.seed
    values, images, motion = _render_chunks(model, fa, fb, theta.repeat_interleave(S), seeds, power, scale, chunk, s,
                                            size, checkpoint)
    values = values.view(K, S, 2)
    score = cosdot_value(values / torch.tensor(scale), pair_targets(theta.numpy())[:, None, :], power)
    best = torch.arange(K) * S + score.argmax(1)  # flattened (angle, seed) element of each angle's best image
    info = {**render_info(model, s), "chunk": chunk}
    moved = None if motion is None else Motion(motion[best, 0], motion[best, 1])
    return CombinationResult(fa, fb, theta.float(), values, scale, score, images[best], power, scale_images, info,
                             *motion_fields(moved))
