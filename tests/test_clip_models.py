"""CLIP image towers (``clip:NAME``): random init, weights from open_clip / OpenAI / timm files, CLIP's input
normalisation. One ViT-B/32 (88M parameters) is built per module and reloaded in place; two tests build
another through ``load_model`` with a file."""
import logging

import pytest
import torch
from torch import nn

from lucent_inhibit.core import rendering
from lucent_inhibit.core.preparation import lucent_normalizes, preprocess_fn
from lucent_inhibit.core.settings import RenderSettings
from lucent_inhibit.core.validate import InputError
from lucent_inhibit.models import clip
from lucent_inhibit.models.loading import load_model
from lucent_inhibit.models.weights import WeightsError

#: the text-tower and contrastive keys of an open_clip / OpenAI checkpoint (small stand-ins; ignored on load)
TEXT_KEYS = ("positional_embedding", "token_embedding.weight", "transformer.resblocks.0.ln_1.weight",
             "text_projection", "logit_scale")


def open_clip_layout(timm_state):
    """The inverse of timm's ``checkpoint_filter_fn`` for OpenAI / open_clip ViTs: timm keys -> ``visual.*``."""
    swaps = [("patch_embed.proj.", "conv1."), ("norm_pre.", "ln_pre."), ("blocks.", "transformer.resblocks."),
             (".norm1.", ".ln_1."), (".norm2.", ".ln_2."), ("attn.qkv.", "attn.in_proj_"),
             ("attn.proj.", "attn.out_proj."), ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj.")]
    out = {}
    for key, value in timm_state.items():
        if key == "head.bias":
            assert not value.any(), "CLIP's projection has no bias"
            continue
        if key == "cls_token":  # (1, 1, C) -> (C,)
            key, value = "class_embedding", value[0, 0]
        elif key == "pos_embed":  # (1, T, C) -> (T, C)
            key, value = "positional_embedding", value[0]
        elif key == "head.weight":  # timm's Linear (E, C) -> CLIP's x @ proj, proj (C, E)
            key, value = "proj", value.t().contiguous()
        elif key.startswith("norm."):
            key = "ln_post." + key[len("norm."):]
        for old, new in swaps:
            key = key.replace(old, new)
        out["visual." + key] = value
    g = torch.Generator().manual_seed(3)
    out.update({k: torch.randn(4, 8, generator=g) for k in TEXT_KEYS})
    return out


@pytest.fixture(scope="module")
def tower():
    """``clip:ViT-B-32`` at random init (reloaded in place by the tests; each starts from :func:`fresh`)."""
    return load_model("clip:ViT-B-32", weights="none")


@pytest.fixture(scope="module")
def images():
    return torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def init_state(tower):
    return {k: v.clone() for k, v in tower.state_dict().items()}


@pytest.fixture(scope="module")
def trained(init_state):
    """Other weights of the same tower (a bias-free projection, as CLIP's): what the files hold."""
    g = torch.Generator().manual_seed(1)
    state = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in init_state.items()}
    state["head.bias"] = torch.zeros_like(state["head.bias"])
    return state


def embed(model, images):
    with torch.no_grad():
        return model(preprocess_fn(model)(images))


@pytest.fixture(scope="module")
def expected(tower, images, init_state, trained):
    """(B, 512) embeddings of ``trained`` (loaded by torch itself), which differ from the random init's."""
    at_init = embed(tower, images)
    tower.load_state_dict(trained)
    out = embed(tower, images)
    tower.load_state_dict(init_state)
    assert out.shape == (1, 512) and not torch.allclose(out, at_init)
    return out


@pytest.fixture(scope="module")
def open_clip_state(trained):
    return open_clip_layout(trained)


def fresh(tower, init_state):
    """``tower`` back at its random init (whose embeddings are not the expected ones, see ``expected``)."""
    tower.reset_classifier(512)
    tower.load_state_dict(init_state)
    return tower


def test_spec_builds_the_clip_tower_with_its_embedding_head(tower):
    assert type(tower).__name__ == "VisionTransformer" and not tower.training
    assert (tower.head.in_features, tower.head.out_features) == (768, 512)
    assert tower.patch_embed.proj.weight.shape == (768, 3, 32, 32) and tower.pos_embed.shape == (1, 50, 768)
    assert type(tower.blocks[0].mlp.act).__name__ == "GELU"


def test_names_map_to_timm_clip_architectures():
    import timm

    for name, (arch, dims) in clip.CLIP_TOWERS.items():
        assert arch in timm.list_models(), arch
        assert ("quickgelu" in arch) == name.endswith("-quickgelu")
    assert clip._architecture("ViT-B/32") == ("vit_base_patch32_clip_quickgelu_224", 512)
    assert clip._architecture("ViT-L/14@336px") == ("vit_large_patch14_clip_quickgelu_336", 768)
    with pytest.raises(InputError, match=r"'ViT-B-31'.*ViT-B-32, ViT-B-32-quickgelu.*ViT-L-14"):
        load_model("clip:ViT-B-31", weights="none")


def test_default_weights_say_nothing_can_be_downloaded():
    with pytest.raises(WeightsError, match=r"clip:ViT-B-32 .*nothing can be downloaded.*local file"):
        load_model("clip:ViT-B-32", weights="default")


def test_normalisation_is_clips(tower):
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    assert torch.allclose(preprocess_fn(tower)(x), (x - mean) / std, atol=1e-6, rtol=0)
    assert not lucent_normalizes(tower) and lucent_normalizes(nn.Linear(2, 2))
    imagenet = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(preprocess_fn(nn.Linear(2, 2))(x), imagenet, atol=1e-6, rtol=0)


def test_renders_feed_the_model_clip_normalised_images():
    from lucent.optvis import objectives, param

    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1))
    net.input_normalization = (clip.CLIP_MEAN, clip.CLIP_STD)
    seen = []
    net[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    torch.manual_seed(0)
    start = param.image(16)
    first = start[1]().detach().clone()
    settings = RenderSettings(steps=1, size=16, model_size=16, seed=5)
    rendering.run_render(net, objectives.channel("0", 1), start, settings, "t", transforms=[])
    mean, std = torch.tensor(clip.CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(clip.CLIP_STD).view(1, 3, 1, 1)
    assert torch.allclose(seen[-1], (first - mean) / std, atol=1e-5, rtol=0)  # the render step (probes come first)


@pytest.mark.slow
def test_open_clip_file_reproduces_the_embeddings(tmp_path, open_clip_state, images, expected, caplog):
    path = tmp_path / "open_clip_vit_b_32.pt"
    torch.save(open_clip_state, path)
    with caplog.at_level(logging.INFO, logger="lucent_inhibit"):
        model = load_model("clip:ViT-B-32", weights=str(path))
    assert torch.equal(embed(model, images), expected)
    assert any(f"{len(TEXT_KEYS)} keys outside the image tower ignored" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_timm_keyed_file_reproduces_the_embeddings(tmp_path, trained, images, expected):
    path = tmp_path / "timm_vit_b_32.pt"
    torch.save(trained, path)
    assert torch.equal(embed(load_model("clip:ViT-B-32", weights=str(path)), images), expected)


def test_training_checkpoint_of_a_ddp_model_loads(tower, init_state, open_clip_state, images, expected):
    checkpoint = {"module." + k: v for k, v in open_clip_state.items()}
    clip.load_clip_weights(fresh(tower, init_state), checkpoint, "ckpt")
    assert torch.equal(embed(tower, images), expected)


def test_checkpoint_without_projection_outputs_the_class_token(tower, init_state, trained, open_clip_state, images,
                                                               expected):
    state = {k: v for k, v in open_clip_state.items() if k != "visual.proj"}
    clip.load_clip_weights(fresh(tower, init_state), state, "no-proj")
    assert isinstance(tower.head, nn.Identity)
    out = embed(tower, images)
    assert out.shape == (1, 768)
    assert torch.allclose(out @ trained["head.weight"].t(), expected, atol=1e-4, rtol=1e-4)


def test_another_architecture_names_the_keys_and_leaves_the_model(tower, init_state, trained, open_clip_state):
    state = dict(open_clip_state)
    state["visual.conv1.weight"] = torch.zeros(768, 3, 16, 16)  # a ViT-B/16 at 224 px: 196 + 1 tokens
    state["visual.positional_embedding"] = torch.zeros(197, 768)
    with pytest.raises(WeightsError, match=r"another CLIP architecture.*visual.conv1.weight \(768, 3, 16, 16\) vs "
                                           r"\(768, 3, 32, 32\).*positional_embedding \(197, 768\) vs \(50, 768\)"):
        clip.load_clip_weights(tower, state, "b16")
    model = fresh(tower, init_state)
    headless_and_cut = {k: v for k, v in trained.items() if not k.startswith(("head.", "blocks.11."))}
    with pytest.raises(WeightsError, match=r"missing keys: blocks.11.norm1.weight"):
        clip.load_clip_weights(model, headless_and_cut, "x")
    assert model.head.out_features == 512  # the head dropped for the headless file is restored


def test_truncated_state_dict_names_the_missing_blocks(tower, open_clip_state):
    state = {k: v for k, v in open_clip_state.items() if ".resblocks.11." not in k}
    with pytest.raises(WeightsError, match=r"missing keys: blocks.11.norm1.weight"):
        clip.load_clip_weights(tower, state, "truncated")


def test_truncated_file_is_refused(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save({"visual.class_embedding": torch.zeros(768), "visual.proj": torch.zeros(768, 512)}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(WeightsError, match="cannot be loaded safely"):
        load_model("clip:ViT-B-32", weights=str(path))
