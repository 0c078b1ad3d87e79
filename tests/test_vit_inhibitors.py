"""Inhibitor dictionaries and disinhibition on token layers (B, T, C): the channels are the last dimension
(not the tokens), removal sets those channels in every token, and every token position is read on the
model's own grid (a non-square grid, register tokens without a class token) rather than a guess from T."""
import numpy as np
import pytest
import torch
from test_vit import tiny_vit

import lucent_inhibit as li
from lucent_inhibit import PassSettings
from lucent_inhibit.attribution.passes import dataset_pass
from lucent_inhibit.causal.inhibitors import channel_inhibition, inhibitor_dictionary, remove_channels
from lucent_inhibit.synthesis.channels import layer_channel
from lucent_inhibit.core.hooks import capture
from lucent_inhibit.core.preparation import preprocess_fn
from lucent_inhibit.core.validate import InputError

FEATURE, LAYER = li.Feature("blocks_1_mlp_fc1", unit=3, position="cls"), "blocks_0"


def images(n=12, size=32, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_channel_inhibition_sums_the_last_dimension_over_tokens_and_images():
    vit, x = tiny_vit(), images()
    run = dataset_pass(vit, x, [LAYER], [FEATURE], PassSettings(batch_size=4, progress=False))
    inhibition, f = channel_inhibition(run, np.arange(12), FEATURE, LAYER)
    att = li.attribute(vit, x, FEATURE, [LAYER])
    by_hand = (-att.scores[LAYER]).clamp(min=0).double().sum((0, 1))  # (C,): images and tokens summed
    assert inhibition.shape == (16,) == (vit.embed_dim,)  # 16 channels, not 17 tokens
    np.testing.assert_allclose(inhibition, by_hand.numpy(), rtol=1e-6)
    np.testing.assert_allclose(f, att.activation.double().numpy(), rtol=1e-6)


def test_removing_token_channels_sets_them_in_every_token():
    vit, x = tiny_vit(), images(4)
    run = dataset_pass(vit, x, [LAYER], [FEATURE], PassSettings(batch_size=4, progress=False))
    got = remove_channels(run, x, FEATURE, LAYER, [2, 5], torch.zeros(()))

    def zeroed(module, inputs, out):
        out = out.clone()
        out[:, :, [2, 5]] = 0
        return out

    from lucent_inhibit.core.layers import get_layer

    handle = get_layer(vit, LAYER).register_forward_hook(zeroed)
    try:
        with torch.no_grad():
            acts = capture(vit, preprocess_fn(vit)(x), [FEATURE.layer])
    finally:
        handle.remove()
    torch.testing.assert_close(got, FEATURE(acts[FEATURE.layer]).float())


def test_inhibitor_dictionary_on_a_token_layer_ranks_channels():
    vit, x = tiny_vit(), images()
    res = inhibitor_dictionary(vit, x, FEATURE, LAYER, k=4, n_channels=3, n_remove=2, random_draws=2, visualize=False, settings=PassSettings(batch_size=4))
    assert res.info["layer_channels"] == 16 and res.channels.max() < 16
    run = dataset_pass(vit, x, [LAYER], [FEATURE], PassSettings(batch_size=4, progress=False))
    inhibition, _ = channel_inhibition(run, res.mtis, FEATURE, LAYER)
    assert res.channels.tolist() == np.argsort(-inhibition, kind="stable")[:3].tolist()


def test_token_channel_objective_reads_the_last_dimension():
    h = torch.arange(2 * 5 * 4, dtype=torch.float32).reshape(2, 5, 4)
    assert float(layer_channel("l", 1)(lambda name: h)) == pytest.approx(-float(h[:, :, 1].mean()))
    assert float(layer_channel("l", 1, batch=1)(lambda name: h)) == pytest.approx(-float(h[1, :, 1].mean()))
    m = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    assert float(layer_channel("l", 2)(lambda name: m)) == pytest.approx(-float(m[:, 2].mean()))


def test_positions_are_read_on_the_models_grid_not_guessed():
    wide = tiny_vit(img_size=(32, 48))  # a 4 x 6 patch grid behind 1 class token: 25 tokens, guessed as 5 x 5
    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        acts = capture(wide, preprocess_fn(wide)(x), ["blocks_1_mlp_fc1"])["blocks_1_mlp_fc1"]
    for position, token in (((0, 0), 1), ((1, 2), 1 + 6 + 2), ("center", 1 + 2 * 6 + 3)):
        att = li.attribute(wide, x, li.Feature("blocks_1_mlp_fc1", unit=3, position=position), ["blocks_0"])
        torch.testing.assert_close(att.activation, acts[:, token, 3])
        assert att.feature.grid is None  # the result keeps the feature as given
    registers = tiny_vit(class_token=False, reg_tokens=1, global_pool="avg")  # token 0 is a register token
    with pytest.raises(InputError, match="no class token"):
        li.attribute(registers, images(2), li.Feature("blocks_1_mlp_fc1", unit=3, position="cls"), ["blocks_0"])
