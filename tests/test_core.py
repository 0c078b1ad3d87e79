"""The core under every stage: one layer/hook module, one render engine, one result base."""
import dataclasses
import io
import zipfile

import numpy as np
import pytest
import torch
from lucent.optvis import objectives as lucent_objectives
from lucent.optvis import param as lucent_param
from torch import nn

from lucent_inhibit.core import hooks, rendering, results
from lucent_inhibit.core.features import Feature
from lucent_inhibit.core.layers import HOOK_DICTS, AmbiguousLayerError, hook_count, hooks_restored, layers
from lucent_inhibit.core.probe import call_counts, forward_order, layers_before
from lucent_inhibit.core.settings import RenderSettings, as_settings


class Twice(nn.Module):
    """A module reused in one forward pass (as torchvision ResNet's ``relu``)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.act(self.conv2(self.act(self.conv1(x)))))


# ------------------------------------------------------------------------------------------------
# hooks
# ------------------------------------------------------------------------------------------------
def test_capture_stops_after_the_deepest_layer_and_removes_its_hooks(tiny_net, tiny_images):
    ran = []
    forward_order(tiny_net, tiny_images)  # the one probe pass per model and input shape
    tiny_net.conv3.register_forward_hook(lambda m, i, o: ran.append("conv3"))
    before = hook_count(tiny_net)
    acts = hooks.capture(tiny_net, tiny_images, ["relu1", "conv2"])
    assert set(acts) == {"relu1", "conv2"} and ran == []  # conv3 never ran
    assert torch.allclose(acts["conv2"], tiny_net.conv2(tiny_net.relu1(tiny_net.conv1(tiny_images))))
    assert hook_count(tiny_net) == before


def test_capture_removes_hooks_when_the_forward_pass_raises(tiny_net, tiny_images):
    def boom(m, i, o):
        raise RuntimeError("planted failure")

    h = tiny_net.conv2.register_forward_hook(boom)
    before = hook_count(tiny_net)
    with pytest.raises(ValueError, match=r"before computing \['conv3'\] \(RuntimeError: planted failure"):
        hooks.capture(tiny_net, tiny_images, ["conv3"])
    assert hook_count(tiny_net) == before
    h.remove()


def test_a_module_run_twice_is_refused_with_usable_names():
    net = Twice().eval()
    x = torch.rand(1, 3, 8, 8)
    assert call_counts(net, x)["act"] == 2
    with pytest.raises(AmbiguousLayerError, match=r"'act' runs 2 times.*conv2"):
        hooks.capture(net, x, ["act"])
    assert set(hooks.capture(net, x, ["conv2"])) == {"conv2"}
    assert hook_count(net) == 0


def test_unknown_layer_lists_close_matches(tiny_net, tiny_images):
    with pytest.raises(ValueError, match="Closest valid names: conv2"):
        hooks.capture(tiny_net, tiny_images, ["conv_2"])


def test_replace_substitutes_a_layer_output(tiny_net, tiny_images):
    acts = hooks.capture(tiny_net, tiny_images, ["conv3"], replace={"relu2": torch.zeros_like})
    assert torch.allclose(acts["conv3"], tiny_net.conv3.bias.view(1, -1, 1, 1).expand_as(acts["conv3"]))


def test_hooks_restored_removes_only_what_was_added(tiny_net):
    keep = tiny_net.conv1.register_forward_hook(lambda m, i, o: None)
    with pytest.raises(KeyError):
        with hooks_restored(tiny_net):
            tiny_net.conv2.register_forward_hook(lambda m, i, o: None)
            tiny_net.conv3.register_forward_pre_hook(lambda m, i: None)
            raise KeyError("half-way")
    assert hook_count(tiny_net) == 1 and len(tiny_net.conv1._forward_hooks) == 1
    keep.remove()


def test_hooks_restored_also_removes_backward_and_keyword_hooks_added_inside(tiny_net):
    keep = tiny_net.conv2.register_full_backward_hook(lambda m, gi, go: None)
    with hooks_restored(tiny_net):
        tiny_net.conv2.register_full_backward_hook(lambda m, gi, go: None)
        tiny_net.conv1.register_forward_hook(lambda m, a, k, o: None, with_kwargs=True, always_call=True)
        tiny_net.relu1.register_forward_pre_hook(lambda m, a, k: None, with_kwargs=True)
    assert len(tiny_net.conv2._backward_hooks) == 1 and keep.id in tiny_net.conv2._backward_hooks
    for m in tiny_net.modules():
        for d in HOOK_DICTS:
            assert not getattr(m, d) or (m is tiny_net.conv2 and d == "_backward_hooks"), (m, d)
    keep.remove()


def test_output_shapes_equal_capture_and_need_no_forward_pass_once_probed(tiny_net, tiny_images):
    names = ["input", "relu1", "conv3"]
    want = {n: t[:1].shape for n, t in hooks.capture(tiny_net, tiny_images, names).items()}
    calls = []
    tiny_net.conv1.register_forward_hook(lambda m, i, o: calls.append(1))
    got = hooks.output_shapes(tiny_net, tiny_images, names)
    assert {n: t.shape for n, t in got.items()} == want and all(t.device.type == "meta" for t in got.values())
    assert calls == []  # read off the forward-order probe that capture made
    with pytest.raises(ValueError, match="Closest valid names: conv2"):
        hooks.output_shapes(tiny_net, tiny_images, ["conv_2"])
    with pytest.raises(AmbiguousLayerError):
        hooks.output_shapes(Twice().eval(), torch.rand(1, 3, 8, 8), ["act"])


def test_truncated_view_keeps_names_and_stops(tiny_net, tiny_images):
    view = rendering.Truncated(tiny_net, "relu1")
    assert layers(view) == layers(tiny_net)
    assert view(tiny_images) is None
    view.stop_layer = None
    assert view(tiny_images).shape == (4, 4, 16, 16)
    assert hook_count(tiny_net) == 0


def test_layers_before_is_in_forward_order(tiny_net, tiny_images):
    assert layers_before(tiny_net, tiny_images, "conv3") == ["conv1", "relu1", "conv2", "relu2"]


# ------------------------------------------------------------------------------------------------
# render engine
# ------------------------------------------------------------------------------------------------
def _state(model):
    return hook_count(model), [p.requires_grad for p in model.parameters()], model.training


def test_render_leaves_the_model_and_rngs_as_found(tiny_net):
    torch.manual_seed(123)
    np.random.seed(7)
    start = lucent_param.image(16)
    t_state, n_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    before = _state(tiny_net)
    settings = RenderSettings(steps=3, size=16, model_size=16, seed=5)
    run = rendering.run_render(tiny_net, lucent_objectives.channel("conv2", 1), start, settings, "t")
    assert run.images.shape == (1, 3, 16, 16) and len(run.history["objective"]) == 3
    assert run.stopped_after == "conv2"
    assert _state(tiny_net) == before
    assert torch.equal(torch.get_rng_state(), t_state) and np.array_equal(np.random.get_state()[1], n_state)


@pytest.mark.parametrize("flushing", [False, True])
def test_render_flushes_subnormals_and_restores_the_setting_it_found(tiny_net, flushing):
    """Inside a render, float subnormals are zero on the CPU (the model input in channels-last memory); after
    it, finished or raising, the process's setting is the one it found."""
    from lucent_inhibit.core.numerics import flushing_subnormals

    seen = []

    def parts(T):
        seen.append((flushing_subnormals(), T("input").shape))
        if len(seen) == 2:
            raise RuntimeError("half-way")
        return -T("conv3").mean(), {}

    torch.set_flush_denormal(flushing)
    try:
        with pytest.raises(RuntimeError, match="half-way"):
            rendering.run_render(tiny_net, rendering.Parts(parts), lucent_param.image(16),
                                 RenderSettings(steps=4, size=16, model_size=16), "t")
        assert flushing_subnormals() is flushing
        assert [flushed for flushed, _ in seen] == [True, True]
        rendering.run_render(tiny_net, lucent_objectives.channel("conv2", 1), lucent_param.image(16),
                             RenderSettings(steps=2, size=16, model_size=16), "t")
        assert flushing_subnormals() is flushing
        assert torch.tensor([1e-39]).item() != 0.0 or flushing  # a subnormal survives outside unless asked
    finally:
        torch.set_flush_denormal(False)


def test_channels_last_memory_keeps_shape_and_values():
    from lucent_inhibit.core.numerics import channels_last

    x = torch.randn(2, 3, 5, 7)
    y = channels_last(x)
    assert y.shape == x.shape and torch.equal(y, x) and y.is_contiguous(memory_format=torch.channels_last)
    tokens = torch.randn(2, 5, 7)
    assert channels_last(tokens) is tokens  # only (B, C, H, W) batches change memory


class _ViewNet(torch.nn.Module):
    """Convolutions, then ``.view`` of their (B, C, H, W) output: needs NCHW memory (channels-last raises)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.relu1 = torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()
        self.fc = torch.nn.Linear(4 * 14 * 14, 5)

    def forward(self, x):
        x = self.relu1(self.conv1(x))
        return self.fc(x.view(x.size(0), -1))


def test_a_model_that_needs_nchw_memory_gets_its_input_as_it_is(tiny_net):
    """The probe tells whether a model runs on channels-last input; attribution and renders use that memory
    only where it does, so a model whose ``.view`` needs NCHW runs, with the values of a plain pass."""
    import lucent_inhibit as li
    from lucent_inhibit.core.probe import probed

    model, x = _ViewNet().eval(), torch.rand(3, 3, 16, 16)
    assert not probed(model, x).channels_last and probed(tiny_net, torch.rand(1, 3, 16, 16)).channels_last
    result = li.attribute(model, x, ("fc", 2), ["relu1"])
    from lucent_inhibit.core.preparation import preprocess_fn

    acts = model.relu1(model.conv1(preprocess_fn(model)(x))).detach().requires_grad_(True)
    grad, = torch.autograd.grad(model.fc(acts.reshape(3, -1))[:, 2].sum(), acts)
    np.testing.assert_allclose(result.scores["relu1"].numpy(), (grad * acts).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    run = rendering.run_render(model, lucent_objectives.channel("fc", 2), lucent_param.image(16),
                               RenderSettings(steps=2, size=16, model_size=16), "t")
    assert run.images.shape == (1, 3, 16, 16)


def test_render_is_reproducible_from_its_seed(tiny_net):
    s = RenderSettings(steps=4, size=16, model_size=16, seed=3)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)  # the same starting image
        runs.append(rendering.run_render(tiny_net, lucent_objectives.channel("conv3", 0), lucent_param.image(16), s, "t"))
    assert torch.equal(runs[0].images, runs[1].images)
    other = rendering.run_render(tiny_net, lucent_objectives.channel("conv3", 0), lucent_param.image(16), s.replace(seed=4), "t")
    assert not torch.equal(other.images, runs[0].images)


def test_non_finite_loss_stops_the_render_and_names_stage_step_and_settings(tiny_net):
    def parts(T):
        v = T("conv2").mean()
        return v * float("nan"), {"objective": v.detach()}

    before = _state(tiny_net)
    settings = RenderSettings(steps=5, size=16, model_size=16, lr=0.01)
    with pytest.raises(rendering.NonFiniteLoss, match=r"probe: the loss became nan at step 1 of 5.*lr=0.01"):
        rendering.run_render(tiny_net, rendering.Parts(parts), lucent_param.image(16), settings, "probe")
    assert _state(tiny_net) == before


def test_render_raising_half_way_restores_the_model(tiny_net):
    calls = []

    def parts(T):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("half-way")
        loss = -T("conv3").mean()
        return loss, {}

    before = _state(tiny_net)
    with pytest.raises(RuntimeError, match="half-way"):
        rendering.run_render(tiny_net, rendering.Parts(parts), lucent_param.image(16),
                             RenderSettings(steps=4, size=16, model_size=16), "t")
    assert _state(tiny_net) == before


@pytest.mark.parametrize("bad, match", [
    ({"steps": 0}, "render setting steps must be >= 1, got 0"),
    ({"steps": 10 ** 20}, r"steps must be <= 1000000, got 100000000000000000000 \(accepted: 1 to 1000000\)"),
    ({"steps": 2.5}, "steps must be an integer, got 2.5"),
    ({"lr": float("nan")}, "lr must be finite, got nan"),
    ({"lr": 0}, "lr must be > 0"),
    ({"size": "64"}, "size must be an int or a pair"),
    ({"size": b"88"}, "size must be an int or a pair"),
    ({"size": 4}, "size height must be >= 8"),
    ({"model_size": (64, 10 ** 9)}, "model_size width must be <= 4096"),
    ({"param": "pixels"}, "param must be one of"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"seed": 2 ** 40}, r"seed must be <= 4294967295"),
])
def test_render_settings_are_validated(bad, match):
    with pytest.raises(ValueError, match=match):
        RenderSettings(**bad)


def test_render_settings_sizes_follow_lucents_rule():
    assert RenderSettings(size=64).model_hw(128) == (224, 224)
    assert RenderSettings(size=256).model_hw(128) == (256, 256)
    assert RenderSettings(model_size=96).model_hw(64) == (96, 96)
    assert as_settings(None, steps=7).steps == 7


# ------------------------------------------------------------------------------------------------
# result base
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Planted(results.Result):
    values: torch.Tensor
    table: np.ndarray
    feature: Feature
    maps: dict
    name: str = "x"
    count: int = 3


@dataclasses.dataclass
class Other(results.Result):
    values: torch.Tensor


def _planted():
    return Planted(torch.arange(4.0), np.array(["a", "b"]), Feature("conv2", unit=1, position=(1, 2)),
                   {"conv1": torch.ones(2, 3).half()}, "planted", 7)


def test_result_round_trip_keeps_values_types_and_dtypes(tmp_path):
    r = _planted()
    path = r.save(tmp_path / "r")
    assert path.endswith("r.npz")
    back = Planted.load(tmp_path / "r")  # the same name loads what was saved under it
    assert torch.equal(back.values, r.values) and back.table.tolist() == ["a", "b"]
    assert back.feature == r.feature and back.maps["conv1"].dtype == torch.float16
    assert (back.name, back.count) == ("planted", 7)
    assert results.load_result(path).feature == r.feature
    with np.load(path, allow_pickle=False) as z:  # plain numpy reads it
        assert "values" in z.files


def test_result_of_another_type_is_refused_naming_both(tmp_path):
    path = Other(torch.zeros(2)).save(tmp_path / "o.npz")
    with pytest.raises(results.ResultFileError, match=r"o.npz' holds a Other .*expected a Planted"):
        Planted.load(path)


def test_truncated_file_is_refused(tmp_path):
    path = _planted().save(tmp_path / "t")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(results.ResultFileError, match="truncated"):
        Planted.load(path)


def test_pickled_object_array_is_refused(tmp_path):
    path = _planted().save(tmp_path / "p")
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("evil.npy", buf.getvalue())
    with pytest.raises(results.ResultFileError, match="pickled object array"):
        Planted.load(path)


def test_newer_format_version_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "FORMAT_VERSION", results.FORMAT_VERSION + 1)
    path = _planted().save(tmp_path / "n")
    monkeypatch.undo()
    with pytest.raises(results.ResultFileError, match="newer lucent-inhibit"):
        Planted.load(path)


def test_first_release_file_is_named_as_an_older_format(tmp_path):
    path = tmp_path / "old.npz"
    np.savez(path, activation=np.zeros(2), meta=np.frombuffer(b"{}", dtype=np.uint8))
    with pytest.raises(results.ResultFileError, match="older format"):
        Planted.load(path)


def test_unstorable_field_is_refused_at_save(tmp_path):
    r = _planted()
    r.name = object()
    with pytest.raises(TypeError, match="field 'name'"):
        r.save(tmp_path / "u")
    assert not list(tmp_path.iterdir())  # nothing half-written
