"""tense(mode="auto"): fast where the fast gradient is exact (piecewise-linear paths), exact elsewhere."""
import warnings

import pytest
import torch
from lucent.optvis.render import hook_model

from lucent_inhibit import Feature, preprocess_fn
from lucent_inhibit.core.layers import hook_count, hooks_restored
from lucent_inhibit.models.loading import load_model
from lucent_inhibit.synthesis import objectives


def _image_gradient(model, objective, x):
    """d objective / d image for one forward pass through Lucent's hook, as inside render_vis."""
    x = x.clone().requires_grad_(True)
    with hooks_restored(model):
        T = hook_model(model, lambda: x)
        model(preprocess_fn(model)(x))
        loss = objective(T)
        (g,) = torch.autograd.grad(loss, x)
    return g.flatten()


def _cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


def _gradients(model, feature, layer, x):
    out, choice = {}, {}
    for mode in ("auto", "fast", "exact"):
        obj = objectives.tense(feature, layer, mode=mode, on_choice=lambda m, c: choice.update(mode=m, cos=c))
        out[mode] = _image_gradient(model, obj, x)
    return out, choice


@pytest.mark.slow
def test_auto_is_fast_on_the_embedded_model(lite0):
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when fast is exact
        g, choice = _gradients(lite0, Feature("blocks_4_0_bn3_drop", unit=70), "blocks_4_0_bn2_act", x)
    assert choice["mode"] == "fast" and choice["cos"] > 0.9999
    assert torch.equal(g["auto"], g["fast"])


def test_auto_is_exact_across_layernorm_and_gelu():
    torch.manual_seed(0)
    model = load_model("timm:convnext_atto", weights="none")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="not piecewise linear"):
        g, choice = _gradients(model, Feature("stages_2_blocks_1", unit=3), "stages_2_blocks_0", x)
    assert choice["mode"] == "exact" and choice["cos"] < 0.99
    assert _cos(g["auto"], g["exact"]) >= 0.99
    assert _cos(g["fast"], g["exact"]) < 0.99  # what the first release used silently
    assert hook_count(model) == 0
