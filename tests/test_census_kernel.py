"""The census's totals kernel: P and N summed on the chunk's gradient-support box equal the totals of the
full attribution maps (``attribute``), for one position, several positions in one chunk, the mean, token
and linear layers, the batched and the per-feature backward; the box is the receptive field (a 1x1
convolution's: one position) and never misses a nonzero gradient."""
import pytest
import torch
from torch import nn

import lucent_inhibit as li
from lucent_inhibit.attribution.attribute import feature_graph, prepare_inputs
from lucent_inhibit.attribution.kernel import chunk_totals, grow_support, support_box
from lucent_inhibit.core.settings import PassSettings


class OneByOne(nn.Module):
    """conv3x3 -> relu -> conv1x1: a unit at (y, x) of ``head`` sees one position of ``relu``."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Conv2d(6, 4, 1)
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return self.head(self.relu(self.conv(x)))


def by_attribute(model, x, features, layers):
    """(k, B, L) P and N of each feature from ``attribute``'s full maps."""
    pos, neg = [], []
    for f in features:
        att = li.attribute(model, x, f, layers)
        pos.append(torch.stack([att.positive(l) for l in layers], -1))
        neg.append(torch.stack([att.negative(l) for l in layers], -1))
    return torch.stack(pos), torch.stack(neg)


def kernel(model, x, features, layers, batched=False):
    graph = feature_graph(model, prepare_inputs(model, x, True), features, layers)
    return chunk_totals(*graph, features, layers, range(len(features)), False, batched)


X = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def test_support_box_of_a_one_by_one_convolution_is_the_position_itself():
    net = li.prepare(OneByOne())
    graph = feature_graph(net, prepare_inputs(net, X, True), [li.Feature("head", 2, position=(5, 2))], ["relu"])
    g, = torch.autograd.grad(graph[0][0].sum(), graph[1])
    box = support_box(grow_support(None, g), g.shape)
    assert box == (slice(5, 6), slice(2, 3))
    assert support_box(None, g.shape) == (slice(0, 8), slice(0, 8))
    assert support_box(torch.zeros(8, 8, dtype=torch.bool), g.shape) == (slice(0, 0), slice(0, 0))


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("positions", [[(5, 2)], [(0, 0), (7, 7), (3, 4)], ["mean", "center"]])
def test_box_totals_equal_the_full_maps(positions, batched):
    net = li.prepare(OneByOne())
    features = [li.Feature("head", u, position=p) for u, p in zip((0, 3, 1), positions)]
    layers = ["relu", "conv", "input"]
    p, n = kernel(net, X, features, layers, batched)
    p_ref, n_ref = by_attribute(net, X, features, layers)
    assert p.shape == (len(features), 3, 3)
    torch.testing.assert_close(p, p_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(n, n_ref, rtol=1e-5, atol=1e-5)
    assert bool((p_ref > 0).any()) and bool((n_ref > 0).any())  # both signs occur: a real check


def test_token_and_linear_layers_are_summed_whole():
    from test_vit import tiny_vit

    vit = tiny_vit()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    features = [li.Feature("blocks_1_mlp_fc1", u, position="cls") for u in (0, 5)] + [li.Feature("head", 2)]
    p, n = kernel(vit, x, features, ["blocks_0", "patch_embed"])
    p_ref, n_ref = by_attribute(vit, x, features, ["blocks_0", "patch_embed"])
    torch.testing.assert_close(p, p_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(n, n_ref, rtol=1e-5, atol=1e-6)


def test_census_of_a_one_by_one_head_equals_one_feature_attributions():
    net = li.prepare(OneByOne())
    census = li.layer_census(net, X, "head", ["relu"], position=(2, 6), chunk_size=3, settings=PassSettings(batch_size=2, progress=False))
    p_ref, n_ref = by_attribute(net, X, census.features, ["relu"])
    torch.testing.assert_close(torch.from_numpy(census.pos), p_ref.transpose(0, 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.from_numpy(census.neg), n_ref.transpose(0, 1), rtol=1e-5, atol=1e-5)


class Aliased(OneByOne):
    """OneByOne with an identity after the ReLU: the backward hands ``relu`` and ``same`` one gradient
    tensor, which the kernel must not write into."""

    def __init__(self):
        super().__init__()
        self.same = nn.Identity()

    def forward(self, x):
        return self.head(self.same(self.relu(self.conv(x))))


@pytest.mark.parametrize("model", [OneByOne, Aliased])
def test_features_inside_the_box_so_far_and_beyond_it_are_summed_exactly(model):
    """Repeated positions take the confined path (the box so far holds the gradient), a new one grows the box."""
    net = li.prepare(model())
    positions = [(2, 2), (2, 2), (2, 3), (2, 2), (6, 1)]
    features = [li.Feature("head", u, position=p) for u, p in zip((0, 1, 2, 3, 0), positions)]
    layers = ["relu", "same", "conv"] if model is Aliased else ["relu", "conv"]
    p, n = kernel(net, X, features, layers)
    p_ref, n_ref = by_attribute(net, X, features, layers)
    torch.testing.assert_close(p, p_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(n, n_ref, rtol=1e-5, atol=1e-5)
    assert float((p_ref > 0).float().mean()) > 0.6 and bool((n_ref > 0).any())  # a real check


def test_a_gradient_shared_by_two_layers_is_not_written_into():
    from lucent_inhibit.attribution.kernel import _own_storage

    net = li.prepare(Aliased())
    values, acts = feature_graph(net, prepare_inputs(net, X, True), [li.Feature("head", 0)], ["relu", "same", "conv"])
    grads = torch.autograd.grad(values[0].sum(), acts)
    shared = grads[0].untyped_storage().data_ptr() == grads[1].untyped_storage().data_ptr()
    assert _own_storage(grads) == [not shared, not shared, True]
    assert _own_storage([grads[2], grads[2].expand(2, -1, -1, -1, -1)[0]]) == [False, False]
