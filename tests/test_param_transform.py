"""Seeded parameterizations, box-crop augmentation, Lucent composition and faccent interop."""
import numpy as np
import pytest
import torch
from lucent.optvis import render
from lucent.optvis import transform as ltransform

from lucent_inhibit import Feature
from lucent_inhibit.core.layers import hooks_restored
from lucent_inhibit.synthesis import objectives as O
from lucent_inhibit.synthesis import param as P
from lucent_inhibit.synthesis import transform as TR

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.mark.parametrize("factory", [P.fourier_image, P.phase_image])
@pytest.mark.parametrize("hw", [(16, 16), (15, 17), (20, 13)])
def test_seeded_params_render_the_seed_at_step_0(factory, hw):
    seed = torch.rand(2, 3, *hw, generator=torch.Generator().manual_seed(0))
    params, image_f = factory(seed=seed)
    assert all(p.requires_grad and p.is_leaf for p in params)
    x = image_f().detach()
    assert x.shape == seed.shape
    assert float((x - seed).abs().max()) < 1e-3
    # one seed repeated over a batch, and the [renders, seeds] layout for seed regularization
    params, image_f = factory(seed=seed[0], batch=3, with_seed=True)
    x = image_f().detach()
    assert x.shape == (6, 3, *hw)
    assert torch.equal(x[3:], seed[0:1].repeat(3, 1, 1, 1))
    assert float((x[:3] - seed[0]).abs().max()) < 1e-3


def test_seed_of_another_size_is_resized_or_rejected():
    seed = torch.rand(3, 40, 30)
    _, image_f = P.fourier_image(size=24, seed=seed)
    assert image_f().shape == (1, 3, 24, 24)
    with pytest.raises(ValueError, match="40x30 but the render is 24x24"):
        P.check_seed(seed, 24, resize=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        P.fourier_image(seed=seed * 3)
    with pytest.raises(ValueError, match="shape"):
        P.phase_image(seed=torch.rand(4, 8, 8))
    with pytest.raises(ValueError, match="seed images for a batch"):
        P.fourier_image(seed=torch.rand(2, 3, 8, 8), batch=3)
    with pytest.raises(ValueError, match="needs size"):
        P.fourier_image()
    with pytest.raises(ValueError, match="magnitude must have shape"):
        P.phase_image(size=16, magnitude=torch.ones(3, 16, 16))


def test_noise_params_and_phase_keeps_magnitude():
    g = torch.Generator().manual_seed(0)
    params, image_f = P.fourier_image(size=(16, 20), batch=2, generator=g)
    x = image_f()
    assert x.shape == (2, 3, 16, 20) and 0.4 < float(x.detach().mean()) < 0.6
    params, image_f = P.phase_image(size=16, batch=2, generator=g)
    x = image_f()
    assert x.shape == (2, 3, 16, 16) and float(x.detach().std()) > 0.05
    mag0 = torch.fft.rfft2(P.from_rgb(x.detach()), norm="ortho").abs()
    opt = torch.optim.Adam(params, lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        (-image_f()[:, 0].mean()).backward()
        opt.step()
    y = image_f().detach()
    assert float((y - x.detach()).abs().max()) > 1e-2  # the image changed ...
    mag1 = torch.fft.rfft2(P.from_rgb(y), norm="ortho").abs()
    # ... its spectrum magnitude did not (columns 0 and w/2 are self-conjugate: irfft2 projects them)
    assert torch.allclose(mag0[..., 1:-1], mag1[..., 1:-1], atol=1e-3, rtol=1e-3)


def test_masked_param_changes_only_the_masked_region():
    seed = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.8 + 0.1
    mask = torch.zeros(16, 16)
    mask[4:10, 4:10] = 1
    params, image_f = P.masked(P.fourier_image(seed=seed), mask, base=seed)
    opt = torch.optim.Adam(params, lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        (-image_f().mean()).backward()
        opt.step()
    x = image_f().detach()
    assert torch.allclose(x[..., mask == 0], seed[..., mask == 0], atol=1e-6)
    assert float((x - seed)[..., mask == 1].abs().max()) > 0.05
    # gradient mode (no base): the image is unchanged, its gradient is masked
    raw = P.fourier_image(size=16)
    params, image_f = P.masked(raw, mask)
    x_raw = raw[1]()
    assert torch.equal(image_f().detach(), x_raw.detach())
    (g_masked,) = torch.autograd.grad(image_f().sum(), params)
    (g_full,) = torch.autograd.grad((raw[1]() * mask).sum(), params)
    assert torch.allclose(g_masked, g_full, atol=1e-6)
    with pytest.raises(ValueError, match="mask is 8x8"):
        P.masked(P.fourier_image(size=16), torch.ones(8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        P.masked(P.fourier_image(size=16), torch.full((16, 16), 2.0))


def test_box_crop_ranges_fixed_size_and_shared_draws():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    seen = set()
    for _ in range(40):
        t = TR.box_crop(0.05, 1.0, size=32, noise=0.0)
        # record the crop side by matching: a crop of a constant-gradient image reveals its extent
        ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 64, 64)
        out = t(ramp)
        assert out.shape == (1, 3, 32, 32)
        seen.add(round(float(out[0, 0, 0, -1] - out[0, 0, 0, 0]), 1))
    assert max(seen) >= 0.8 and min(seen) <= 0.2  # small and large crops both drawn
    # identical treatment of a render and its seed sharing a batch (same box, same noise)
    t = TR.box_crop(0.1, 0.9, size=24, noise=0.05, n_crops=3)
    out = t(torch.cat([x, x]))
    assert out.shape == (6, 3, 24, 24)
    for c in range(3):
        assert torch.equal(out[2 * c], out[2 * c + 1])
    assert not torch.equal(out[0], out[2])
    with pytest.raises(ValueError, match="crop sizes"):
        TR.box_crop(0.5, 0.2)
    with pytest.raises(ValueError, match="n_crops"):
        TR.box_crop(n_crops=0)
    with pytest.raises(ValueError, match="batch"):
        TR.box_crop()(torch.rand(3, 8, 8))


def test_transforms_compose_with_lucents():
    x = torch.rand(2, 3, 40, 40)
    ts = ltransform.standard_transforms + TR.accentuation_transforms(size=32, extra=[TR.shift(2)])
    out = TR.compose(ts)(x)
    assert out.shape == (2, 3, 32, 32)
    assert TR.shift(3)(x).shape == x.shape


def test_render_vis_with_seeded_param_and_box_crops(tiny_net):
    seed = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(2)) * 0.8 + 0.1
    params, image_f = P.fourier_image(seed=seed)
    obj = O.feature(Feature("conv3", unit=1))
    before = float(image_f().detach().sub(seed).abs().max())
    with hooks_restored(tiny_net):
        render.render_vis(
            tiny_net, obj, param_f=lambda: (params, image_f), transforms=[TR.box_crop(0.3, 1.0, size=24)],
            thresholds=(5,), show_image=False, progress=False, fixed_image_size=24,
        )
    assert before < 1e-3 and float(image_f().detach().sub(seed).abs().max()) > 1e-2


def test_faccent_param_and_box_crop_in_lucent_render_vis(tiny_net):
    """faccent (installed --no-deps) parameterizer and transform with these objectives in Lucent's loop."""
    import faccent.param as fparam  # installed --no-deps by the set-up: CI must run this interop test
    import faccent.transform as ftransform
    seed = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1
    pz = fparam.fourier_phase(init_img=seed, img_size=(32, 32), device="cpu")
    assert not any(p.requires_grad for p in pz()[0])  # why the adapter exists: render_vis would not move these

    def param_f():  # the user's whole part: the adapter marks faccent's parameters requires_grad
        return P.from_faccent(pz)

    x0 = pz.params_to_img().detach().clone()
    assert float((x0 - seed).abs().max()) < 0.05  # faccent's seeding reproduces the seed
    obj = O.tense(Feature("conv3", unit=1), "conv1") + O.spatial_cosdot("relu1", torch.rand(8, 32, 32))
    with hooks_restored(tiny_net):
        imgs = render.render_vis(
            tiny_net, obj, param_f=param_f,
            transforms=[ftransform.box_crop_2(0.2, 0.99), ftransform.uniform_gaussian_noise()],
            thresholds=(4,), show_image=False, progress=False, fixed_image_size=32,
        )
    assert imgs[0].shape == (1, 32, 32, 3) and np.isfinite(imgs[0]).all()
    assert float((pz.params_to_img().detach() - x0).abs().max()) > 1e-3  # optimisation moved faccent's params


def test_from_faccent_marks_every_parameterizer_and_names_what_to_do():
    """li.param.from_faccent: faccent's fourier_phase, fourier and pixel as Lucent's (params, image_f), leaf
    params with grad (the same tensors the parameterizer reads), and one-line errors for what cannot work."""
    import faccent.param as fparam  # installed --no-deps by the set-up: CI must run this interop test

    seed = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(5)) * 0.8 + 0.1
    for factory in (fparam.fourier_phase, fparam.fourier, fparam.pixel):
        pz = factory(init_img=seed, img_size=(16, 16), device="cpu")
        params, image_f = P.from_faccent(pz)
        assert params and all(p.requires_grad and p.is_leaf for p in params), factory.__name__
        x = image_f()
        assert x.shape == (1, 3, 16, 16) and x.requires_grad, factory.__name__
        x.sum().backward()  # gradients reach the tensors faccent's image function reads
        assert all(p.grad is not None for p in params), factory.__name__
    # a plain function returning (tensor, image_f) works too; its single tensor becomes a list
    t = torch.zeros(1, 3, 4, 4)
    params, _ = P.from_faccent(lambda: (t, lambda: torch.sigmoid(t)))
    assert params == [t] and t.requires_grad
    with pytest.raises(ValueError, match="needs a faccent parameterizer") as err:
        P.from_faccent(fparam.fourier_phase(init_img=seed, img_size=(16, 16), device="cpu").params)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="not \\(params, image_f\\)"):
        P.from_faccent(lambda: torch.zeros(3))
    with pytest.raises(ValueError, match="no parameters"):
        P.from_faccent(lambda: ([], lambda: None))
    with pytest.raises(ValueError, match="not a floating-point"):
        P.from_faccent(lambda: ([torch.zeros(3, dtype=torch.long)], lambda: None))
    src = seed.clone().requires_grad_(True)
    with pytest.raises(ValueError, match=r"init_img=image\.detach\(\)"):
        P.from_faccent(fparam.pixel(init_img=src, img_size=(16, 16), device="cpu"))


def test_build_names_every_render_parameterization():
    """param.build: the parameterization a RenderSettings.param names, seeded or from noise."""
    seed = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 0.8 + 0.1
    for kind in ("fourier", "phase"):
        _, image_f = P.build(kind, (16, 16), seed=seed, batch=2, with_seed=True)
        x = image_f().detach()
        assert x.shape == (4, 3, 16, 16) and float((x[:2] - seed).abs().max()) < 1e-3
        g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
        a = P.build(kind, 16, batch=3, generator=g1)[1]().detach()
        b = P.build(kind, 16, batch=3, generator=g2)[1]().detach()
        assert a.shape == (3, 3, 16, 16) and torch.equal(a, b)
    params, image_f = P.build("lucent", (16, 20), batch=2)
    assert image_f().shape == (2, 3, 16, 20) and all(p.requires_grad for p in params)
    seen = {}

    def custom(seed=None, size=None, batch=None, with_seed=False):
        seen.update(seed=seed, size=size, batch=batch, with_seed=with_seed)
        return P.fourier_image(size=size, batch=batch)

    P.build(custom, (16, 16), batch=2)
    assert seen == {"seed": None, "size": (16, 16), "batch": 2, "with_seed": False}
    with pytest.raises(ValueError, match="param must be one of"):
        P.build("pixels", 16)
    with pytest.raises(ValueError, match="starts from noise"):
        P.build("lucent", 16, seed=seed)
    with pytest.raises(ValueError, match="batch must be >= 1, got 0"):
        P.build("fourier", 16, batch=0)
    with pytest.raises(ValueError, match="size height must be >= 2"):
        P.build("phase", (1, 16))
    with pytest.raises(ValueError, match=r"size width must be <= 4096, got 1000000000 \(accepted: 2 to 4096\)"):
        P.build("fourier", (16, 10 ** 9))
    with pytest.raises(ValueError, match="batch must be <= 4096"):
        P.build("phase", 16, batch=10 ** 18)
    for bad in (b"88", "88", (8.5, 8), None):
        with pytest.raises(ValueError, match="size must be an int or a pair|size height must be an integer"):
            P.fourier_image(size=bad) if bad is not None else P.natural_magnitude(bad)
    with pytest.raises(ValueError, match="sd must be finite"):
        P.fourier_image(16, sd=float("nan"))
    with pytest.raises(ValueError, match="decay_power must be >= 0"):
        P.natural_magnitude(16, decay_power=-1)
    with pytest.raises(ValueError, match="magnitude contains NaN"):
        P.phase_image(4, magnitude=torch.full((3, 4, 3), float("nan")))


def test_transform_arguments_are_validated():
    with pytest.raises(ValueError, match="n_crops must be an integer"):
        TR.box_crop(n_crops=1.5)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        TR.box_crop(noise=-0.1)
    with pytest.raises(ValueError, match="max_shift must be >= 0"):
        TR.shift(-1)
    with pytest.raises(ValueError, match="size height must be >= 1"):
        TR.box_crop(size=(0, 4))
    with pytest.raises(ValueError, match="size must be an int or a pair"):
        TR.box_crop(size=b"88")
    with pytest.raises(ValueError, match="n_crops must be <= 4096"):
        TR.box_crop(n_crops=10 ** 12)
    with pytest.raises(ValueError, match="max_shift must be <= 4096"):
        TR.shift(10 ** 9)


def test_zoom_crops_keep_their_point_in_place_and_are_crop_major():
    """Each crop is a zoom about ``about``: a ramp image (100 per row, 1 per column) keeps its value at that pixel
    to within a pixel and a half (the box's rounding) while its corner moves by rows; the output is (n_crops * B)
    rows, crop c of every image together."""
    h = w = 64
    ramp = torch.arange(h, dtype=torch.float32)[:, None] * 100 + torch.arange(w, dtype=torch.float32)[None]
    x = torch.stack([ramp, ramp, ramp])[None].repeat(2, 1, 1, 1)
    x[1] *= 3  # the two images differ: crop-major order is checked by their scale
    about = (0.25, 0.75)
    out = TR.zoom_crops(about, n_crops=5, min_zoom=0.5, max_zoom=0.8, noise=0.0,
                        generator=torch.Generator().manual_seed(0))(x)
    assert out.shape == (10, 3, h, w)
    py, px = int(about[0] * h), int(about[1] * w)
    for c in range(5):
        for b, scale in ((0, 1), (1, 3)):
            row = out[c * 2 + b, 0]
            assert abs(float(row[py, px]) - float(x[b, 0, py, px])) <= 1.5 * 101 * scale
            assert float(row[0, 0]) - float(x[b, 0, 0, 0]) > 250 * scale  # the corner moved: a real zoom
    with pytest.raises(ValueError, match="zooms must satisfy"):
        TR.zoom_crops(min_zoom=0.9, max_zoom=0.5)
    with pytest.raises(ValueError, match="about"):
        TR.zoom_crops(about=(1.5, 0.5))
