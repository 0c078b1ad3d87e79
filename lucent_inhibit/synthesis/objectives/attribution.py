"""Objectives built on layer-to-feature attribution ``S = grad_h f * h`` ("Understanding Inhibition Through
Maximally Tense Images", Hamblin, Saha, Konkle, Alvarez 2024, section 2).

- :func:`tense` (SPEC 2.4): the tension of the rendered image's excitatory and inhibitory totals, for
  synthesising maximally tense images;
- :func:`signed_attribution` (SPEC 2.3): the +/- inversion objective, a spatial cosdot toward
  ``relu(S)`` or ``relu(-S)`` of one image (a map, or a vision transformer's patch tokens on their grid);
- :func:`attribution_mask` (SPEC 2.5): where an image excites or inhibits a feature, as a spatial mask;
- :func:`seed_l2` ("Feature Accentuation", Hamblin, Fel, Saha, Konkle, Alvarez): the latent-layer L2
  distance to the seed.
"""
from __future__ import annotations

import logging
import warnings
from typing import Callable, Optional, Tuple

import torch
from lucent.optvis.objectives import wrap_objective

from ...attribution.totals import TENSION_SCORES, signed_totals, tension
from ...core.features import Feature, as_feature
from ...core.tokens import TokenGrid, infer_grid, token_maps
from ...core.validate import InputError, check_choice, check_int, check_number, check_size
from .cosdots import as_target, layer_mask, spatial_cosdot
from .views import hooked, layer_tensor, resolve_hook

TENSE_MODES = ("auto", "fast", "exact")
#: ``mode="auto"`` keeps the fast gradient when its cosine to the exact one is at least this at step 1.
AUTO_COSINE = 0.999
log = logging.getLogger("lucent_inhibit")


def _tense_settings(score, mode, granularity, norm, mask) -> None:
    check_choice("mode", mode, TENSE_MODES)
    if not callable(score) and score not in TENSION_SCORES:
        raise ValueError(f"unknown tension score {score!r}; expected one of {TENSION_SCORES} or a callable")
    check_choice("granularity", granularity, ("element", "channel"))
    check_choice("norm", norm, ("l1", "l2"))
    if mask is not None:
        layer_mask(mask, (1, 1))  # validate now, resize inside the loop


@wrap_objective()
def tense(
    feature: Feature,
    layer: str,
    score="min",
    mode: str = "auto",
    granularity: str = "element",
    norm: str = "l1",
    mask=None,
    batch=None,
    on_choice: Optional[Callable[[str, float], None]] = None,
):
    """Maximise the tension of the rendered image: both excitation ``P`` and inhibition ``N`` large.

    Inside the render loop, for the images of the batch: ``f = feature(T(feature.layer))`` (B,),
    ``h = T(layer)`` (B, C, H, W) or (B, C), ``g = d sum(f) / d h`` (same shape as ``h``),
    ``S = g * h``, ``(P, N) = signed_totals(S, granularity, norm)`` (each (B,)) and the value is
    ``tension(P, N, score)`` (units of the feature for L1 sums).

    Args:
        feature: the :class:`Feature` (or ``(layer, unit)``).
        layer: attribution layer; it must feed ``feature.layer``.
        score: ``"min"`` (default), ``"geometric"``, ``"harmonic"``, ``"product"`` or a callable ``(P, N)``.
        mode: ``"exact"`` differentiates through ``g`` (double backprop; right for any network);
            ``"fast"`` treats ``g`` as a constant. Between ``layer`` and the feature, a network made of
            ReLU/ReLU6, max-pooling, convolutions, linear layers and eval-mode BatchNorm has ``g``
            piecewise constant in ``h``, so both modes give the same image gradient almost everywhere
            (tested); with smooth activations (SiLU, GELU, sigmoid, tanh), LayerNorm or attention only
            ``exact`` is right. ``"auto"`` (default) decides at the first step: it compares the gradient
            of the tension with respect to ``h`` in both modes and keeps ``fast`` when their cosine is at
            least :data:`AUTO_COSINE` (the path is piecewise linear there), ``exact`` otherwise (with a
            warning, since the fast gradient would have been wrong); the choice is logged and passed to
            ``on_choice(mode, cosine)``. Exact mode (and auto's comparison) differentiates a gradient:
            through attention it needs the math kernel of ``scaled_dot_product_attention``, and through
            hardsigmoid (MobileNetV3) a twice-differentiable equivalent: the library's renders
            (:func:`lucent_inhibit.core.rendering.run_render`) use both
            (:func:`~lucent_inhibit.core.rendering.twice_differentiable`); elsewhere the error names the op.
        granularity, norm: as in :func:`lucent_inhibit.signed_totals`.
        mask: optional spatial mask (H, W) in [0, 1] (e.g. :func:`attribution_mask`): ``S`` is multiplied
            by it (resized to the layer's grid; on a token layer to its patch grid, class and register tokens
            weighted 0: :func:`masked_scores`), so only tension inside the mask counts.
        batch: Lucent batch index, or None for all.

    Loss: minus the batch mean of the tension.
    """
    feat = as_feature(feature)
    _tense_settings(score, mode, granularity, norm, mask)

    chosen = {"mode": None if mode == "auto" else mode}

    def value(T, m):
        s = signed_attribution_scores(T, feat, layer, mode=m, batch=batch)
        if mask is not None:
            s = masked_scores(s, mask, layer, feat.grid)
        p, n = signed_totals(s, granularity, norm)
        return tension(p, n, score).mean()

    def inner(T):
        if chosen["mode"] is None:
            chosen["mode"] = _choose_mode(T, layer, value, feat, on_choice)
        elif chosen["mode"] == "exact" and not chosen.get("checked"):
            _check_double_backward(T, layer, value, feat)  # the image gradient would fail later, unnamed
            chosen["checked"] = True
        return -value(T, chosen["mode"])

    return inner


def _check_double_backward(T, layer: str, value, feature: Feature) -> None:
    """Differentiate the exact tension once with respect to the attribution layer: an op between the layer and
    the feature that has no double backward raises here, named (:func:`raise_no_double_backward`)."""
    h = hooked(T, layer)[0]
    try:
        torch.autograd.grad(value(T, "exact"), h, retain_graph=True, allow_unused=True)
    except RuntimeError as exc:
        raise_no_double_backward(exc, feature, layer)


def masked_scores(s: torch.Tensor, mask, layer: str, grid=None) -> torch.Tensor:
    """Attribution ``s`` weighted by a spatial mask (H, W) in [0, 1] resized to the layer's grid: a map
    (B, C, h, w) position by position; a token layer (B, T, C) patch token by patch token on its patch grid
    (``grid``, else inferred from T), its class and register tokens weighted 0 (they have no place in the
    image). ``ValueError`` for a layer without positions."""
    if s.dim() == 4:
        return s * layer_mask(mask, s.shape[2:], s.device, s.dtype)
    if s.dim() == 3:
        g = infer_grid(s.shape[1], layer) if grid is None else grid.for_tokens(s.shape[1], layer)
        m = layer_mask(mask, (g.grid_h, g.grid_w), s.device, s.dtype).flatten()
        return s * torch.cat([m.new_zeros(g.prefix), m])[None, :, None]
    raise ValueError(f"mask given, but layer {layer!r} has no spatial dimensions (shape {tuple(s.shape)})")


def _choose_mode(T, layer: str, value, feature: Feature, on_choice) -> str:
    """``"fast"`` when the fast gradient of the tension w.r.t. the attribution layer equals the exact one."""
    h = hooked(T, layer)[0]
    try:
        grads = [torch.autograd.grad(value(T, m), h, retain_graph=True, allow_unused=True)[0] for m in ("fast", "exact")]
    except RuntimeError as exc:
        raise_no_double_backward(exc, feature, layer)
    if grads[0] is None or grads[1] is None:
        raise ValueError(f"the tension of {feature.name} does not depend on layer {layer!r}")
    a, b = grads[0].flatten().double(), grads[1].flatten().double()
    cos = float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-30)) if b.norm() > 0 else 1.0
    mode = "fast" if cos >= AUTO_COSINE else "exact"
    if mode == "exact":
        warnings.warn(f"tense(mode='auto'): the fast gradient has cosine {cos:.3f} to the exact one between "
                      f"{layer!r} and {feature.layer!r} (not piecewise linear there): using exact mode")
    log.info("tense(mode='auto') chose %s mode (cosine of fast to exact gradient %.4f)", mode, cos)
    if on_choice is not None:
        on_choice(mode, cos)
    return mode


def raise_no_double_backward(exc: RuntimeError, feature: Feature, layer: str) -> None:
    """Re-raise a missing double backward as an :class:`~lucent_inhibit.core.validate.InputError` that names the
    op and says what to do (anything else is re-raised as it is)."""
    text = str(exc)
    if "derivative for" not in text or "not implemented" not in text:
        raise exc
    op = text.split("derivative for", 1)[1].split("is not implemented", 1)[0].strip().removeprefix("aten::")
    where = ("a fused attention kernel" if "scaled_dot_product" in op else f"the model's {op.removesuffix('_backward')}")
    raise InputError(
        f"tense's exact gradient between {layer!r} and {feature.name} needs a double backward, which {where} does "
        f"not have in PyTorch ({op}); render through lucent_inhibit.tense_image or core.rendering.run_render, or wrap "
        "render_vis in lucent_inhibit.core.rendering.twice_differentiable(model) (the math attention kernel, "
        "hardsigmoid as relu6(x + 3) / 6), or use mode='fast' (right only where the path to the feature is "
        "piecewise linear)"
    ) from exc


def _feature_gradient(f: torch.Tensor, h: torch.Tensor, feature: Feature, layer: str, mode: str) -> torch.Tensor:
    """``d sum(f) / d h``, kept in the graph for ``mode="exact"``; errors name the feature and layer."""
    try:
        (g,) = torch.autograd.grad(f.sum(), h, create_graph=(mode == "exact"), retain_graph=True, allow_unused=True)
    except RuntimeError as exc:
        raise ValueError(f"cannot differentiate feature {feature.name} with respect to layer {layer!r}: {exc}") from exc
    if g is None:
        raise ValueError(
            f"attribution layer {layer!r} does not feed the feature at {feature.layer!r} (no gradient path "
            "from it to the feature); choose a layer that comes before the feature layer on a path into it"
        )
    return g.detach() if mode == "fast" else g


def signed_attribution_scores(T, feature: Feature, layer: str, mode: str = "fast", batch=None) -> torch.Tensor:
    """``S = grad_h f * h`` for the render batch inside an objective: shape of ``T(layer)`` rows.

    Differentiable with respect to the image: through ``h`` only (``mode="fast"``) or through ``h`` and
    the gradient (``mode="exact"``). ``T`` may be a :class:`~lucent_inhibit.synthesis.objectives.BatchView`.
    """
    _, start, stop = resolve_hook(T)
    h, h_layout = hooked(T, layer)
    act, act_layout = hooked(T, feature.layer)
    if not torch.is_tensor(h) or not h.requires_grad:
        raise ValueError(
            f"layer {layer!r} has no gradient in this pass; tense needs the render loop's graph "
            "(run it inside render_vis, with gradients enabled)"
        )
    stop = act.shape[0] if stop is None else stop
    rows = list(range(start, stop))
    if isinstance(batch, int):
        if not 0 <= batch < len(rows):
            raise ValueError(f"batch={batch} out of range for {len(rows)} images")
        rows = [rows[batch]]
    g = _feature_gradient(feature(act_layout.canonical(act))[rows], h, feature, layer, mode)  # in h's own layout
    return h_layout.canonical(g * h)[rows]


def signed_parts(T, feature: Feature, layer: str, mode: str = "fast", batch=None, granularity="element", norm="l1"):
    """``(P, N)``, each (B,), of the render batch inside an objective (see :func:`tense`)."""
    s = signed_attribution_scores(T, as_feature(feature), layer, mode=mode, batch=batch)
    return signed_totals(s, granularity, norm)


# ------------------------------------------------------------------------------------------------
# +/- attribution inversion objective (SPEC 2.3)
# ------------------------------------------------------------------------------------------------
def _single_scores(scores, name: str = "scores", grid: Optional[TokenGrid] = None):
    """One image's scores as a map (C, H, W), and the prefix tokens' scores (P, C) (None for a map).

    A map: (C, H, W) or (1, C, H, W). Token-layer scores: (T, C) (grid given or inferred from T) or, with
    ``grid``, (1, T, C), put on the patch grid with :func:`~lucent_inhibit.core.tokens.token_maps`.
    :class:`InputError` naming the shape otherwise.
    """
    s = as_target(scores, name)
    shape = tuple(s.shape)
    if grid is not None and not isinstance(grid, TokenGrid):
        raise InputError(f"grid must be a lucent_inhibit.core.tokens.TokenGrid or None, got {type(grid).__name__}")
    if grid is None and s.dim() == 4:
        if s.shape[0] != 1:
            raise InputError(f"{name} must be one image's attribution (C, H, W) or (1, C, H, W), got {shape}")
        s = s[0]
    if grid is None and s.dim() == 3:
        return s, None
    if s.dim() == 3 and s.shape[0] == 1:
        s = s[0]
    if s.dim() != 2:
        want = "token-layer scores (T, C) or (1, T, C) (grid given)" if grid is not None else \
            "a map (C, H, W) or (1, C, H, W), or token-layer scores (T, C)"
        raise InputError(f"{name} must be one image's attribution: {want}, got shape {shape}")
    try:
        g = infer_grid(s.shape[0], name) if grid is None else grid.for_tokens(s.shape[0], name)
    except InputError as exc:
        raise InputError(f"{name} of shape {shape} (T={s.shape[0]} tokens, C={s.shape[1]}) do not fit the token "
                         f"grid: {exc}") from None
    return token_maps(s[None], g, name)[0], s[: g.prefix]


def _check_sign(sign) -> int:
    if isinstance(sign, bool) or sign not in (1, -1):
        raise InputError(f"sign must be +1 (excitatory) or -1 (inhibitory), got {sign!r}")
    return int(sign)


def _signed_map(scores, sign, grid: Optional[TokenGrid] = None,
                layer: Optional[str] = None) -> Tuple[torch.Tensor, bool]:
    """``relu(sign * S)`` (C, H, W) of one image's scores (on the patch grid for token scores), and whether
    the scores were a token layer's. :class:`InputError` when it is all zero, saying so when the signed
    attribution is all in prefix (class / register) tokens, which a spatial map leaves out."""
    sign = _check_sign(sign)
    s, prefix = _single_scores(scores, grid=grid)
    target, which = (sign * s).clamp(min=0), ("positive" if sign == 1 else "negative")
    where = "" if layer is None else f" at layer {layer!r}"
    if float(target.max()) > 0:
        return target, prefix is not None
    if prefix is not None and prefix.numel() and float((sign * prefix).max()) > 0:
        raise InputError(
            f"all of the image's {which} attribution{where} sits in its {prefix.shape[0]} prefix (class / register) "
            f"token(s), which the spatial target over the {s.shape[1]}x{s.shape[2]} patch grid leaves out: "
            "relu(sign * S) of the patch tokens is all zero; choose another attribution layer or feature position"
        )
    raise InputError(f"the image has no {which} attribution{where}: relu(sign * S) is all zero")


@wrap_objective()
def signed_attribution(
    layer: str, scores, sign: int = 1, power: float = 2.0, crop: Optional[float] = 0.01, mask=None, batch=None,
    grid: Optional[TokenGrid] = None,
):
    """The +/- attribution inversion objective: spatial cosdot against ``relu(sign * S)``.

    Args:
        layer: the layer the attribution was taken at: activations (B, C, H, W) at the render size, or a
            vision transformer's token layer (B, T, C), whose patch tokens are read as a (C, grid_h, grid_w)
            map (:func:`~lucent_inhibit.synthesis.objectives.spatial_cosdot`).
        scores: one image's attribution ``S`` at ``layer``: a map (C, H, W) or (1, C, H, W); on a token
            layer (T, C), or (1, T, C) with ``grid``. Token scores become the patch-grid map
            (:func:`lucent_inhibit.core.tokens.token_maps`): the class and register (prefix) tokens are left out
            of the spatial target, so attribution there is not inverted (an :class:`InputError` when all of
            the signed attribution sits in them, since the target would be empty).
        sign: +1 for the excitatory target ``relu(S)``, -1 for the inhibitory target ``relu(-S)``.
        power: cosine exponent of the cosdot.
        crop: crop to the box where the target exceeds ``crop`` times its maximum (None: whole map).
        mask: optional spatial mask (H, W) in [0, 1], e.g. ``attribution_mask(scores, sign)``: only the
            positions where the image excites (or inhibits) the feature count.
        batch: Lucent batch index, or None for all.
        grid: the model's token layout (:func:`lucent_inhibit.core.tokens.token_grid`) for token scores; None
            infers it from T (a square patch grid) and reads a 3-D ``scores`` as a map (C, H, W).

    Loss: minus the batch mean of ``dot(h, T) * |cos(h, T)|^power``.
    """
    target, _ = _signed_map(scores, sign, grid, layer)
    return spatial_cosdot(layer, target, power=power, crop=crop, mask=mask, batch=batch, grid=grid).objective_func


# ------------------------------------------------------------------------------------------------
# signed attribution masks (SPEC 2.5, last ingredient)
# ------------------------------------------------------------------------------------------------
def attribution_mask(
    scores,
    sign: int = 1,
    size: Optional[Tuple[int, int]] = None,
    threshold: float = 0.1,
    smooth: float = 1.0,
    grid: Optional[TokenGrid] = None,
) -> torch.Tensor:
    """Spatial mask (H, W) in [0, 1] of where an image excites (``sign=+1``) or inhibits (-1) a feature.

    Args:
        scores: one image's attribution ``S`` at a spatial layer: (C, H_l, W_l) or (1, C, H_l, W_l); at a
            token layer (T, C), or (1, T, C) with ``grid``: the patch tokens on the patch grid
            (H_l, W_l) = (grid_h, grid_w), the class and register (prefix) tokens left out (an
            :class:`InputError` when all of the signed attribution sits in them).
        sign: +1 uses ``relu(S)``, -1 uses ``relu(-S)``, each summed over channels.
        size: ``(H, W)`` of the output (e.g. the image size); bilinear upsampling of a map, nearest for a
            patch grid (each patch's value over its pixels). None: layer size.
        threshold: values below ``threshold`` times the maximum become 0.
        smooth: exponent applied to the normalised map (1 = linear ramp, 0 = binary).
        grid: the model's token layout (:func:`lucent_inhibit.core.tokens.token_grid`) for token scores; None
            infers it from T and reads a 3-D ``scores`` as a map.

    Returns:
        (H, W) float tensor: 0 where the image does not act with that sign, 1 at its strongest.
        Use it with :func:`lucent_inhibit.synthesis.param.masked` (or ``accentuate(mask=...)``) so that
        optimization changes the image only there.
    """
    size = None if size is None else check_size("size", size)
    threshold = check_number("threshold", threshold, 0, 1, high_open=True)
    smooth = check_number("smooth", smooth, 0)
    target, tokens = _signed_map(scores, sign, grid)
    m = target.sum(0)
    m = m / float(m.max())
    m = ((m - threshold) / (1 - threshold)).clamp(min=0)
    m = (m > 0).float() if smooth == 0 else m.pow(float(smooth))
    if size is not None:
        how = dict(mode="nearest") if tokens else dict(mode="bilinear", align_corners=False)
        m = torch.nn.functional.interpolate(m[None, None], size=tuple(size), **how)[0, 0]
    return m.clamp(0, 1)


# ------------------------------------------------------------------------------------------------
# seed regularizer for accentuation (SPEC 2.5)
# ------------------------------------------------------------------------------------------------
@wrap_objective()
def seed_l2(layer: str, n: Optional[int] = None, batch=None):
    """L2 distance at a latent layer between rendered images and their seeds under the same augmentation.

    The render batch holds ``[renders (n), seeds (n)]`` (see :func:`lucent_inhibit.synthesis.param.fourier_image`
    with ``with_seed=True``), transformed together, so each render and its seed share every crop and
    noise draw. ``h = T(layer)`` (2n, ...): the distance of render ``i`` is ``||h[i] - h[n + i]||_2``
    (seed side detached).

    Args:
        layer: Lucent layer name (an intermediate layer works best; SPEC 2.5).
        n: number of rendered images; None: half the batch.
        batch: index of one render, or None for all.

    Loss: the batch mean of the distances (a penalty, so it is *added*, e.g. ``obj + w * seed_l2``).
    """
    if n is not None:
        n = check_int("n", n, 1)

    def inner(T):
        h = layer_tensor(T, layer)
        k = h.shape[0] // 2 if n is None else n
        if h.shape[0] < 2 * k or k < 1:
            raise ValueError(f"seed_l2 needs a batch [renders ({k}), seeds ({k})], got {h.shape[0]} rows at {layer!r}")
        r, s = h[:k], h[k : 2 * k].detach()
        d = (r - s).flatten(1).norm(dim=1)
        if isinstance(batch, int):
            d = d[batch : batch + 1]
        return d.mean()

    return inner
