"""Features and layer-to-feature attribution (Hamblin et al. 2024, section 2).

A :class:`Feature` is a scalar function of an image read off one layer. :func:`attribute` gives, for
every requested earlier layer ``l`` at once, the attribution ``S_l = grad_{h_l} f * h_l`` (same shape
as the layer's activations) from one forward and one backward pass, or layer integrated gradients.
:func:`signed_totals` splits an attribution into its excitatory total ``P`` and inhibitory total ``N``
(``E = P - N``) and :func:`tension` scores how strongly both are present.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ..core.features import Feature, as_feature, check_images, check_vectors, reading_feature
from ..core.hooks import capture
from ..core.layers import frozen_weights, layer_names, layer_table, model_device
from ..core.numerics import model_input
from ..core.preparation import preprocess_fn
from ..core.probe import deepest, probed
from ..core.results import Result
from ..core.tokens import check_input_size
from ..core.validate import MAX_BATCH, MAX_STEPS, check_flag, check_int
from .kernel import checked_gradient, unused_layer_error
from .totals import signed_totals, tension

METHODS = ("gradient_x_activation", "integrated_gradients")


@dataclass
class Attribution(Result):
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

    def summary(self) -> dict:
        """Mean activation and mean P, N, E at every layer."""
        out = {"feature": self.feature.name, "method": self.method, "images": int(self.activation.shape[0]),
               "mean_activation": float(self.activation.float().mean())}
        for l in self.layers:
            out[l] = {"P": float(self.positive(l).mean()), "N": float(self.negative(l).mean()),
                      "E": float(self.total(l).mean())}
        return out

    def plot(self, path=None, ax=None, **style):
        """Bar chart of mean P and N per layer (:func:`plot_attribution_totals`); returns the Figure."""
        from .figures import plot_attribution_totals

        return plot_attribution_totals(self, path, ax, **style)


def as_layers(layers: Union[str, Sequence[str]]) -> List[str]:
    """One layer name or several -> a de-duplicated list (order kept); an empty one raises ``ValueError``."""
    layers = list(dict.fromkeys(layer_names(layers, "layers")))
    if not layers:
        raise ValueError("layers is empty: name at least one attribution layer")
    return layers


def prepare_inputs(model, images, preprocess):
    """Checked images (B, 3, H, W) in [0, 1] (or (B, D) vectors when ``preprocess`` is False) on the
    model's device, normalised as ``render_vis(preprocess=True)`` does when ``preprocess``."""
    preprocess = check_flag("preprocess", preprocess)
    if not preprocess and torch.is_tensor(images) and images.dim() == 2:
        images = check_vectors(images)  # (B, D) vectors of a non-image model, e.g. the toy models
    else:
        images = check_images(images, preprocess)
        check_input_size(model, images.shape[2:])  # a ViT with a strict patch embedding takes one size
    images = images.to(model_device(model))
    x = preprocess_fn(model)(images) if preprocess else images
    return x


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
            ``S_l = grad_{h_l} f * h_l``; the graph starts at the earliest of ``layers``, not at the
            input unless ``"input"`` is one of them, and the weights' gradients are never recorded) or ``"integrated_gradients"`` (layer IG with a zero baseline at
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
    x = prepare_inputs(model, images, preprocess)
    if method == "integrated_gradients":
        steps = check_int("steps", steps, 1, MAX_STEPS)
        if internal_batch_size is not None:
            internal_batch_size = check_int("internal_batch_size", internal_batch_size, 1, MAX_BATCH * MAX_STEPS)
        att = _integrated_gradients(model, x, reading_feature(model, x, feature), layers, steps, internal_batch_size)
        att.feature = feature
        return att

    values, acts = feature_graph(model, x, [feature], layers)
    scores = layer_scores(values, acts, [feature], layers)
    return Attribution(values[0].detach(), {l: s[0] for l, s in zip(layers, scores)}, feature, method)


# ------------------------------------------------------------------------------------------------
# the gradient x activation kernel: one forward, one backward
# ------------------------------------------------------------------------------------------------
def _leaf_hooks(model: nn.Module, layers: Sequence[str]) -> list:
    """Forward hooks that turn the output of each of ``layers`` that does not already depend on an earlier
    one (the first to run, parallel branches) into a leaf requiring grad: the graph starts there, not at the
    input. Registered before :func:`~lucent_inhibit.core.hooks.capture`'s readers, so those store the leaf.
    Returns the hook handles (the caller removes them); names that are not layers are left to ``capture``."""
    table = layer_table(model)

    def leaf(module, inputs, output):
        if torch.is_tensor(output) and output.is_floating_point() and not output.requires_grad:
            return output.detach().requires_grad_(True)
        return None

    return [table[name].register_forward_hook(leaf) for name in layers if name in table]


def feature_graph(model: nn.Module, x: torch.Tensor, features: Sequence[Feature], layers: Sequence[str],
                  keep: Optional[dict] = None):
    """One forward pass of the normalised input ``x`` (B, ...) that records the autograd graph from the
    earliest of ``layers`` (from ``x`` itself when ``"input"`` is one of them) to the features, with the
    weights frozen and the pass stopped after the deepest feature layer. ``keep`` (a dict), when given, receives
    every layer read (``layers`` and the feature layers) -> its activation, in the library's layout.

    Returns:
        ``(values, acts)``: values (K, B), the K features on every image (graph attached), and acts, the
        activations at ``layers`` in their order, each shaped like the layer.
    """
    features = [reading_feature(model, x, f) for f in features]  # token positions on the model's grid
    feature_layers = list(dict.fromkeys(f.layer for f in features))
    probed(model, x)  # the probe (order, layouts) sees the model before the leaf hooks change its tensors
    handles = []
    x = model_input(model, x)  # NHWC convolutions: faster forward + backward (lucent_inhibit.core.numerics)
    with frozen_weights(model), torch.enable_grad():
        try:
            if "input" in layers:
                x = x.detach().requires_grad_(True)
            else:
                handles = _leaf_hooks(model, layers)
            stop = feature_layers[0] if len(feature_layers) == 1 else deepest(model, x, feature_layers)
            acts = capture(model, x, list(dict.fromkeys(list(layers) + feature_layers)), stop_at=stop)
        finally:
            for h in handles:
                h.remove()
        for name in feature_layers:
            if name not in acts:
                raise ValueError(f"the forward pass never reached feature layer {name!r}")
        if keep is not None:
            keep.update(acts)
        values = feature_values(acts, features)
    inputs = []
    for l in layers:
        if l not in acts:
            raise unreached_layer_error(model, x, l, features[0])
        inputs.append(acts[l])
    return values, inputs


def unreached_layer_error(model: nn.Module, x: torch.Tensor, layer: str, feature: Feature) -> ValueError:
    """The error for attribution ``layer`` that a pass stopped after the feature layer did not reach: it never
    runs in the model's forward pass on inputs of ``x``'s shape (in eval mode, as every pass runs), or it runs
    after the feature layer."""
    runs = layer in probed(model, x).order
    return unused_layer_error(layer, feature, "it runs after the feature layer in the forward pass" if runs
                              else "it never runs in the model's forward pass (eval mode)")


def feature_values(acts: Dict[str, torch.Tensor], features: Sequence[Feature]) -> torch.Tensor:
    """(K, B) values of the K ``features`` read off the captured activations ``acts``; features of one layer
    and position are read with one index (units) or one matrix product (directions), so that the batched
    backward of a whole layer's units passes through one indexing node, not K."""
    if len(features) == 1:
        return features[0](acts[features[0].layer])[None]
    groups: Dict[tuple, List[int]] = {}
    for k, f in enumerate(features):
        f.check(acts[f.layer])
        groups.setdefault((f.layer, str(f.position), str(f.grid), f.unit is None), []).append(k)
    parts, order = [], []
    for (layer, _, _, is_direction), rows in groups.items():
        act, first = acts[layer], features[rows[0]]
        if is_direction:
            vec = first.vector(act)
            parts.append(vec @ torch.stack([features[k].direction for k in rows], 1).to(vec.device, vec.dtype))
        else:
            parts.append(_unit_values(act, first, [features[k].unit for k in rows]))
        order += rows
    values = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    if order != sorted(order):
        values = values[:, torch.as_tensor(np.argsort(order), device=values.device)]
    return values.T


def _unit_values(act: torch.Tensor, first: Feature, units: List[int]) -> torch.Tensor:
    """(B, k) ``units`` of ``act`` at ``first``'s position; on a map at one position with one indexing node
    (whose backward writes each gradient straight into the map: one allocation, not one per dimension)."""
    yx = first.spatial_index(act) if act.dim() == 4 else None
    if yx is not None:
        return act[:, units, yx[0], yx[1]]
    return first.vector(act)[:, units]


def layer_scores(values: torch.Tensor, acts: Sequence[torch.Tensor], features: Sequence[Feature],
                 layers: Sequence[str], row: int = 0) -> List[torch.Tensor]:
    """Gradient x activation ``S_l = grad_{h_l} f * h_l`` of feature ``row`` of a :func:`feature_graph`
    (``values`` (K, B), ``acts`` at ``layers``; ``features`` name them in messages), one backward pass.
    Returns per layer (in order) the detached (1, B, ...) attribution, contiguous. (Many features at once
    keep only their totals: :func:`lucent_inhibit.attribution.kernel.chunk_totals`.)"""
    f = values[row]
    if not f.requires_grad:
        raise unused_layer_error(layers[0], features[row], "no gradient path from it to the feature")
    grads = torch.autograd.grad(f.sum(), list(acts), allow_unused=True)
    return [(checked_gradient(g, l, features[row]) * a).detach().contiguous()[None]
            for l, g, a in zip(layers, grads, acts)]


def _integrated_gradients(model, x, feature, layers, steps, internal_batch_size):
    b = x.shape[0]
    per_chunk = max(1, (internal_batch_size or max(b, 32)) // b)
    alphas = (torch.arange(steps, dtype=x.dtype, device=x.device) + 0.5) / steps  # midpoint rule
    with torch.no_grad():
        base_acts = capture(model, x, layers, stop_at=feature.layer)
        f_x = feature(base_acts[feature.layer])
    scores, baselines = {}, {}
    for l in layers:
        if l not in base_acts:
            raise unreached_layer_error(model, x, l, feature)
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
                raise unused_layer_error(l, feature, "no gradient path from it to the feature")
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
    x = prepare_inputs(model, images, preprocess)
    with torch.no_grad():
        acts = capture(model, x, [], stop_at=feature.layer)
    return reading_feature(model, x, feature)(acts[feature.layer])

