"""Attribution layers are cuts: every path into the feature passes through them (else E cannot add up to f).

:func:`lucent_inhibit.core.hooks.separates` reads the autograd graph, so a residual branch however small and a
layer nothing reads are told apart from a true cut; :func:`default_attribution_layer` picks only cuts.
"""
import pytest
import torch
from torch import nn

from lucent_inhibit.core.hooks import separates
from lucent_inhibit.core.layers import hook_count
from lucent_inhibit.models.defaults import default_attribution_layer
from lucent_inhibit.models.inception import inceptionv1
from lucent_inhibit.models.loading import load_model


class Residual(nn.Module):
    """x -> a -> relu -> b, plus a shortcut scaled by ``eps`` around ``a`` and a side module nothing reads."""

    def __init__(self, eps: float):
        super().__init__()
        self.a, self.relu, self.b = nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1)
        self.side, self.out = nn.ReLU(), nn.Identity()
        self.eps = eps

    def forward(self, x):
        self.side(x)  # read by nothing
        y = self.b(self.relu(self.a(x)))
        return self.out(y + self.eps * x.mean(1, keepdim=True) if self.eps is not None else y)


@pytest.mark.parametrize("eps, cut", [(None, True), (1e-6, False), (0.0, False)])
def test_a_residual_branch_however_small_is_not_a_cut(eps, cut):
    model = Residual(eps).eval()
    x = torch.randn(2, 3, 5, 5)
    flags = [p.requires_grad for p in model.parameters()]
    assert separates(model, x, "relu", "b") is True  # b reads only relu
    assert separates(model, x, "side", "b") is False  # nothing reads side
    # the block's output: through relu, and through the shortcut when there is one (a zero scale is still a path)
    assert separates(model, x, "relu", "out") is cut
    assert [p.requires_grad for p in model.parameters()] == flags and hook_count(model) == 0


def test_default_attribution_layer_is_the_block_input_for_inceptions_pre_relu_concatenation():
    model = inceptionv1(pretrained=False)
    n_hooks = hook_count(model)
    layer = default_attribution_layer(model, "mixed4a_pre_relu")
    assert layer == "maxpool4"  # the branch ReLUs inside mixed4a are not cuts (side branches or dead)
    x = torch.randn(2, 3, 224, 224)
    assert not separates(model, x, "mixed4a_3x3_bottleneck", "mixed4a_pre_relu")
    assert separates(model, x, "mixed4a_3x3_bottleneck", "mixed4a_3x3_pre_relu_conv")
    assert hook_count(model) == n_hooks


def test_default_attribution_layer_skips_residual_branches_on_convnext():
    model = load_model("timm:convnext_atto", weights="none")
    # the MLP's GELU inside block 1 is not a cut (the shortcut bypasses it); the previous block's output is
    assert default_attribution_layer(model, "stages_2_blocks_1") == "stages_2_blocks_0"
    assert default_attribution_layer(model, "stages_2_blocks_0_mlp_fc1") == "stages_2_blocks_0_norm"
