"""Features and layer-to-feature attribution (Hamblin et al. 2024, section 2).

A :class:`Feature` is a scalar function of an image read off one layer. :func:`attribute` gives, for
every requested earlier layer ``l`` at once, the attribution ``S_l = grad_{h_l} f * h_l`` (same shape
as the layer's activations) from one forward and one backward pass, or layer integrated gradients.
:func:`signed_totals` splits an attribution into its excitatory total ``P`` and inhibitory total ``N``
(``E = P - N``) and :func:`tension` scores how strongly both are present.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .storage import load_npz, save_npz
from .models import _layer_table, preprocess_fn, unknown_layer_message

Position = Union[str, Tuple[int, int]]

METHODS = ("gradient_x_activation", "integrated_gradients")
TENSION_SCORES = ("min", "geometric", "harmonic", "product")


class Feature:
    """A scalar feature ``f_v(x)`` read off one layer.

    Args:
        layer: Lucent layer name (e.g. ``"blocks_4_0_bn3_drop"``, ``"classifier"``).
        unit: channel index; exactly one of ``unit`` and ``direction``.
        direction: vector over the layer's channels (length C); the feature is ``v . h``.
        position: ``"center"`` (the neuron at ``(H // 2, W // 2)``), ``(y, x)`` or ``"mean"`` (spatial mean).
            Linear layers (B, C) have no position; leave it at ``"center"``.

    Calling the feature on a layer activation of shape (B, C, H, W) or (B, C) returns shape (B,).
    """

    def __init__(
        self,
        layer: str,
        unit: Optional[int] = None,
        direction=None,
        position: Position = "center",
    ):
        if not isinstance(layer, str) or not layer:
            raise ValueError(f"layer must be a non-empty Lucent layer name, got {layer!r}")
        if (unit is None) == (direction is None):
            raise ValueError(
                f"Feature needs exactly one of unit (a channel index) and direction (a vector over channels); "
                f"got unit={unit!r} and direction={'None' if direction is None else 'a vector'}"
            )
        if unit is not None:
            if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or unit < 0:
                raise ValueError(f"unit must be a non-negative channel index, got {unit!r}")
            unit = int(unit)
        if direction is not None:
            direction = torch.as_tensor(np.asarray(direction, dtype=np.float32)).flatten()
            if direction.numel() == 0 or not torch.isfinite(direction).all():
                raise ValueError("direction must be a non-empty finite vector over the layer's channels")
        if isinstance(position, str):
            if position not in ("center", "mean"):
                raise ValueError(f"position must be 'center', 'mean' or (y, x), got {position!r}")
        else:
            try:
                y, x = position
                position = (int(y), int(x))
            except (TypeError, ValueError):
                raise ValueError(f"position must be 'center', 'mean' or a pair (y, x) of ints, got {position!r}")
        self.layer, self.unit, self.direction, self.position = layer, unit, direction, position

    # -- identity -------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        what = f"unit {self.unit}" if self.unit is not None else f"direction[{self.direction.numel()}]"
        pos = self.position if isinstance(self.position, str) else f"({self.position[0]},{self.position[1]})"
        return f"{self.layer} {what} @ {pos}"

    def __repr__(self) -> str:
        return f"Feature({self.name})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Feature) and self.to_dict() == other.to_dict()

    def __hash__(self):
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict:
        return {
            "layer": self.layer,
            "unit": self.unit,
            "direction": None if self.direction is None else [float(v) for v in self.direction],
            "position": self.position if isinstance(self.position, str) else list(self.position),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Feature":
        pos = d.get("position", "center")
        return cls(d["layer"], d.get("unit"), d.get("direction"), pos if isinstance(pos, str) else tuple(pos))

    # -- evaluation -----------------------------------------------------------------------------
    def check(self, act: torch.Tensor) -> None:
        """Raise ``ValueError`` if this feature cannot be read off an activation of ``act``'s shape."""
        if act.dim() not in (2, 4):
            raise ValueError(
                f"layer {self.layer!r} has activations of shape {tuple(act.shape)}; a feature needs "
                "(B, C, H, W) or (B, C)"
            )
        c = act.shape[1]
        if self.unit is not None and self.unit >= c:
            raise ValueError(f"unit {self.unit} out of range for layer {self.layer!r} with {c} channels (0..{c - 1})")
        if self.direction is not None and self.direction.numel() != c:
            raise ValueError(
                f"direction has length {self.direction.numel()}, but layer {self.layer!r} has {c} channels"
            )
        if act.dim() == 2 and not isinstance(self.position, str):
            raise ValueError(
                f"position {self.position} given, but layer {self.layer!r} is linear (shape {tuple(act.shape)}) "
                "and has no spatial positions"
            )
        if act.dim() == 4 and not isinstance(self.position, str):
            y, x = self.position
            h, w = act.shape[2:]
            if not (0 <= y < h and 0 <= x < w):
                raise ValueError(
                    f"position {self.position} is outside layer {self.layer!r}'s {h}x{w} map "
                    f"(expected 0 <= y < {h}, 0 <= x < {w})"
                )

    def spatial_index(self, act: torch.Tensor) -> Optional[Tuple[int, int]]:
        """The (y, x) this feature reads in a (B, C, H, W) map, or None for 'mean' and linear layers."""
        if act.dim() != 4 or self.position == "mean":
            return None
        if self.position == "center":
            return act.shape[2] // 2, act.shape[3] // 2
        return self.position

    def __call__(self, act: torch.Tensor) -> torch.Tensor:
        self.check(act)
        if act.dim() == 4:
            yx = self.spatial_index(act)
            vec = act.mean(dim=(2, 3)) if yx is None else act[:, :, yx[0], yx[1]]
        else:
            vec = act
        if self.unit is not None:
            return vec[:, self.unit]
        return vec @ self.direction.to(vec.device, vec.dtype)


def as_feature(feature) -> Feature:
    """Accept a :class:`Feature`, a dict from :meth:`Feature.to_dict`, or ``(layer, unit)``."""
    if isinstance(feature, Feature):
        return feature
    if isinstance(feature, dict):
        return Feature.from_dict(feature)
    if isinstance(feature, (tuple, list)) and len(feature) == 2:
        return Feature(feature[0], unit=feature[1])
    raise TypeError(f"expected a Feature, a dict or (layer, unit), got {type(feature).__name__}")


# ------------------------------------------------------------------------------------------------
# input validation
# ------------------------------------------------------------------------------------------------
def check_images(images, preprocess: bool = True) -> torch.Tensor:
    """Validate an image batch: (B, 3, H, W) (or one (3, H, W) image) float, in [0, 1] when preprocessing."""
    if not torch.is_tensor(images):
        raise TypeError(f"images must be a torch.Tensor of shape (B, 3, H, W), got {type(images).__name__}")
    if images.dim() == 3:
        images = images[None]
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W) or (3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0)")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got dtype {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    if preprocess:
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"images must be in [0, 1] (the library applies the model's normalisation), got range "
                f"[{lo:.3g}, {hi:.3g}]; pass preprocess=False for already-normalised inputs"
            )
    return images


def check_vectors(inputs) -> torch.Tensor:
    """Validate a batch of input vectors (B, D) for non-image models (e.g. :mod:`lucent_inhibit.toy`).

    Used by :func:`attribute` and :func:`measure` for 2-D inputs when ``preprocess=False``.
    """
    if inputs.shape[0] == 0 or inputs.shape[1] == 0:
        raise ValueError(f"inputs must be a non-empty batch of vectors (B, D), got shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise ValueError(f"inputs must be floating point, got dtype {inputs.dtype}")
    if not torch.isfinite(inputs).all():
        raise ValueError("inputs contain NaN or infinite values")
    return inputs


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


# ------------------------------------------------------------------------------------------------
# forward with hooks
# ------------------------------------------------------------------------------------------------
class _StopForward(Exception):
    pass


def capture(
    model: nn.Module,
    x: torch.Tensor,
    names: Sequence[str],
    stop_at: Optional[str] = None,
    replace: Optional[Dict[str, "callable"]] = None,
) -> Dict[str, torch.Tensor]:
    """Run ``model(x)`` and return the outputs of the named Lucent layers.

    ``stop_at``: stop the forward pass as soon as that layer's output exists (later layers are not
    computed). ``replace``: layer -> function mapping its output to a replacement (used by integrated
    gradients). ``"input"`` returns ``x`` itself.
    """
    table = _layer_table(model)
    acts: Dict[str, torch.Tensor] = {}
    handles = []
    wanted = [n for n in dict.fromkeys(list(names) + ([stop_at] if stop_at else [])) if n != "input"]
    for n in wanted:
        if n not in table:
            raise ValueError(unknown_layer_message(n, ["input"] + list(table)))
    replace = replace or {}

    def make_hook(n):
        def hook(module, inputs, output):
            if not torch.is_tensor(output):
                raise TypeError(f"layer {n!r} returns {type(output).__name__}, not a tensor; pick another layer")
            if n in replace:
                output = replace[n](output)
            acts[n] = output
            if n == stop_at:
                raise _StopForward
            return output if n in replace else None

        return hook

    for n in wanted:
        handles.append(table[n].register_forward_hook(make_hook(n)))
    try:
        if "input" in names:
            acts["input"] = x
        model(x)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return acts


@dataclass
class Attribution:
    """Result of :func:`attribute`.

    Attributes:
        activation: (B,) the feature's value on each image.
        scores: layer -> attribution, same shape as the layer's activations, (B, C, H, W) or (B, C).
        feature: the :class:`Feature` attributed.
        method: ``"gradient_x_activation"`` or ``"integrated_gradients"``.
        baseline_activation: for integrated gradients, layer -> (B,) feature value with that layer's
            activations set to zero; ``total(l)`` then approximates ``activation - baseline_activation[l]``.
    """

    activation: torch.Tensor
    scores: Dict[str, torch.Tensor]
    feature: Feature
    method: str = "gradient_x_activation"
    baseline_activation: Dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def layers(self) -> List[str]:
        return list(self.scores)

    def total(self, layer: str) -> torch.Tensor:
        """E_l: (B,) sum of the attribution over channels and positions."""
        return self._get(layer).flatten(1).sum(1)

    def positive(self, layer: str, granularity: str = "element", norm: str = "l1") -> torch.Tensor:
        """P_l: (B,) total excitatory attribution."""
        return signed_totals(self._get(layer), granularity, norm)[0]

    def negative(self, layer: str, granularity: str = "element", norm: str = "l1") -> torch.Tensor:
        """N_l: (B,) total inhibitory attribution (non-negative)."""
        return signed_totals(self._get(layer), granularity, norm)[1]

    def tension(self, layer: str, score: str = "min", granularity: str = "element", norm: str = "l1"):
        """(B,) tension of P and N at ``layer`` (see :func:`tension`)."""
        p, n = signed_totals(self._get(layer), granularity, norm)
        return tension(p, n, score)

    def _get(self, layer):
        if layer not in self.scores:
            raise KeyError(f"no attribution at layer {layer!r}; computed layers: {self.layers}")
        return self.scores[layer]

    def save(self, path: str) -> None:
        arrays = {"activation": self.activation.cpu().numpy()}
        for i, (layer, s) in enumerate(self.scores.items()):
            arrays[f"score_{i}"] = s.cpu().numpy()
        for i, layer in enumerate(self.scores):
            if layer in self.baseline_activation:
                arrays[f"baseline_{i}"] = self.baseline_activation[layer].cpu().numpy()
        meta = {"feature": self.feature.to_dict(), "method": self.method, "layers": self.layers}
        save_npz(path, arrays, meta)

    @classmethod
    def load(cls, path: str) -> "Attribution":
        z, meta = load_npz(path, "Attribution")
        scores = {l: torch.from_numpy(z[f"score_{i}"]) for i, l in enumerate(meta["layers"])}
        base = {l: torch.from_numpy(z[f"baseline_{i}"]) for i, l in enumerate(meta["layers"]) if f"baseline_{i}" in z}
        return cls(torch.from_numpy(z["activation"]), scores, Feature.from_dict(meta["feature"]), meta["method"], base)


def as_layers(layers: Union[str, Sequence[str]]) -> List[str]:
    """One layer name or several -> a de-duplicated list (order kept); an empty one raises ``ValueError``."""
    if isinstance(layers, str):
        layers = [layers]
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise ValueError("layers is empty: name at least one attribution layer")
    return layers


def _prepare_inputs(model, images, preprocess):
    if not preprocess and torch.is_tensor(images) and images.dim() == 2:
        images = check_vectors(images)  # (B, D) vectors of a non-image model, e.g. the toy models
    else:
        images = check_images(images, preprocess)
    images = images.to(model_device(model))
    x = preprocess_fn(model)(images) if preprocess else images
    return x


def _unused_layer_error(layer: str, feature: Feature, reason: str) -> ValueError:
    return ValueError(
        f"attribution layer {layer!r} does not feed the feature at {feature.layer!r} ({reason}); "
        "choose a layer that comes before the feature layer on a path into it"
    )


def attribute(
    model: nn.Module,
    images: torch.Tensor,
    feature: Feature,
    layers: Union[str, Sequence[str]],
    method: str = "gradient_x_activation",
    steps: int = 16,
    preprocess: bool = True,
    internal_batch_size: Optional[int] = None,
) -> Attribution:
    """Layer-to-feature attribution of ``feature`` at each of ``layers`` for a batch of images.

    Args:
        model: a prepared model (:func:`lucent_inhibit.prepare`), in eval mode.
        images: (B, 3, H, W) float in [0, 1] (or one (3, H, W) image); with ``preprocess=False`` also a
            batch of vectors (B, D) for non-image models such as :mod:`lucent_inhibit.toy`.
        feature: the :class:`Feature` to explain.
        layers: one Lucent layer name or several; ``"input"`` is the normalised model input.
        method: ``"gradient_x_activation"`` (one forward, one backward for all layers: the paper's
            ``S_l = grad_{h_l} f * h_l``) or ``"integrated_gradients"`` (layer IG with a zero baseline at
            each layer, ``steps`` points; totals equal ``f(x) - f(h_l = 0)`` up to integration error).
        steps: integration points for integrated gradients.
        preprocess: apply the model's input normalisation exactly as ``render_vis`` does.
        internal_batch_size: images x steps evaluated together for integrated gradients.

    Returns:
        :class:`Attribution` with ``activation`` (B,) and ``scores[layer]`` shaped like that layer.
    """
    feature = as_feature(feature)
    layers = as_layers(layers)
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; expected one of {METHODS}")
    x = _prepare_inputs(model, images, preprocess)
    if method == "integrated_gradients":
        return _integrated_gradients(model, x, feature, layers, int(steps), internal_batch_size)

    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        acts = capture(model, x, layers, stop_at=feature.layer)
        if feature.layer not in acts:
            raise ValueError(f"the forward pass never reached feature layer {feature.layer!r}")
        f = feature(acts[feature.layer])
        inputs = []
        for l in layers:
            if l not in acts:
                raise _unused_layer_error(l, feature, "it runs after the feature layer in the forward pass")
            inputs.append(acts[l])
        grads = torch.autograd.grad(f.sum(), inputs, allow_unused=True)
    scores = {}
    for l, g, a in zip(layers, grads, inputs):
        if g is None:
            raise _unused_layer_error(l, feature, "no gradient path from it to the feature")
        scores[l] = (g * a).detach()
    return Attribution(f.detach(), scores, feature, method)


def _integrated_gradients(model, x, feature, layers, steps, internal_batch_size):
    if steps < 1:
        raise ValueError(f"steps must be at least 1 for integrated gradients, got {steps}")
    b = x.shape[0]
    per_chunk = max(1, (internal_batch_size or max(b, 32)) // b)
    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps  # midpoint rule
    with torch.no_grad():
        base_acts = capture(model, x, layers, stop_at=feature.layer)
        f_x = feature(base_acts[feature.layer])
    scores, baselines = {}, {}
    for l in layers:
        if l not in base_acts:
            raise _unused_layer_error(l, feature, "it runs after the feature layer in the forward pass")
        h = base_acts[l]
        grad_sum = torch.zeros_like(h)
        for start in range(0, steps, per_chunk):
            a = alphas[start : start + per_chunk]
            k = a.numel()
            scale = a.repeat_interleave(b).view(-1, *([1] * (h.dim() - 1)))
            with torch.enable_grad():
                scaled = (scale * h.repeat(k, *([1] * (h.dim() - 1)))).requires_grad_(True)
                if l == "input":
                    acts = capture(model, scaled, [], stop_at=feature.layer)
                else:
                    acts = capture(model, x.repeat(k, *([1] * (x.dim() - 1))), [l], stop_at=feature.layer, replace={l: lambda o, s=scaled: s})
                f = feature(acts[feature.layer])
                (g,) = torch.autograd.grad(f.sum(), scaled, allow_unused=True)
            if g is None:
                raise _unused_layer_error(l, feature, "no gradient path from it to the feature")
            grad_sum += g.view(k, *h.shape).sum(0)
        scores[l] = (h * grad_sum / steps).detach()
        with torch.no_grad():
            zero = torch.zeros_like(h)
            if l == "input":
                acts = capture(model, zero, [], stop_at=feature.layer)
            else:
                acts = capture(model, x, [l], stop_at=feature.layer, replace={l: lambda o, z=zero: z})
            baselines[l] = feature(acts[feature.layer]).detach()
    return Attribution(f_x.detach(), scores, feature, "integrated_gradients", baselines)


def measure(model: nn.Module, images: torch.Tensor, feature: Feature, preprocess: bool = True) -> torch.Tensor:
    """The feature's value (B,) on a batch of images in [0, 1], without gradients."""
    feature = as_feature(feature)
    x = _prepare_inputs(model, images, preprocess)
    with torch.no_grad():
        acts = capture(model, x, [], stop_at=feature.layer)
    return feature(acts[feature.layer])


# ------------------------------------------------------------------------------------------------
# totals and tension
# ------------------------------------------------------------------------------------------------
def signed_totals(scores, granularity: str = "element", norm: str = "l1"):
    """Split attributions into excitatory and inhibitory totals.

    Args:
        scores: (B, C, H, W) or (B, C) attribution (torch tensor or numpy array).
        granularity: ``"element"`` splits every channel-position by sign (the paper's choice);
            ``"channel"`` sums over space first, then splits each channel by sign.
        norm: ``"l1"`` (sums; ``P - N = E``) or ``"l2"`` (root sum of squares).

    Returns:
        ``(P, N)``, each (B,), non-negative.
    """
    if granularity not in ("element", "channel"):
        raise ValueError(f"granularity must be 'element' or 'channel', got {granularity!r}")
    if norm not in ("l1", "l2"):
        raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
    s = torch.as_tensor(scores)
    if s.dim() < 2:
        raise ValueError(f"scores must be batched, (B, C, ...), got shape {tuple(s.shape)}")
    if granularity == "channel" and s.dim() > 2:
        s = s.flatten(2).sum(2)
    s = s.flatten(1)
    pos, neg = s.clamp(min=0), (-s).clamp(min=0)
    if norm == "l1":
        return pos.sum(1), neg.sum(1)
    return pos.pow(2).sum(1).sqrt(), neg.pow(2).sum(1).sqrt()


def tension(p, n, score: str = "min"):
    """Tension of excitatory total ``p`` and inhibitory total ``n`` (same shapes, non-negative).

    ``"min"``: min(P, N) (both must be large, the default); ``"geometric"``: sqrt(P N);
    ``"harmonic"``: 2PN / (P + N); ``"product"``: P N. Works on tensors and numpy arrays.
    """
    if callable(score):
        return score(p, n)
    if score not in TENSION_SCORES:
        raise ValueError(f"unknown tension score {score!r}; expected one of {TENSION_SCORES} or a callable")
    lib = torch if torch.is_tensor(p) else np
    if score == "min":
        return lib.minimum(p, n)
    if score == "geometric":
        return lib.sqrt(p * n)
    if score == "harmonic":
        return 2 * p * n / (p + n + 1e-12)
    return p * n
