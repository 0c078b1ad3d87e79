"""Combination sweeps and atlas icons under torchrun (two CPU processes, gloo): each rank renders its share
of the render batches and every rank returns the one-process result."""
import json
import textwrap
import warnings

import numpy as np
import torch
from conftest import TinyConvNet
from test_distributed import _torchrun

from lucent_inhibit.atlas import AtlasIcons, AtlasLayout, collect_vectors, grid_cells, render_icons
from lucent_inhibit.combinations.sweeps import CombinationResult, sweep_combinations
from lucent_inhibit.core.distributed import chunk_owner, map_chunks, rank0_seed
from lucent_inhibit.core.features import Feature
from lucent_inhibit.core.settings import PassSettings, RenderSettings

#: One worker program run by every rank; the output folder comes in argv[1].
WORKER = textwrap.dedent('''
    import json, os, sys
    import lucent.optvis.render as lucent_render
    from test_distributed_render import icons_run, sweep_run
    rank, calls, real = int(os.environ["RANK"]), [], lucent_render.render_vis
    def counted(*args, **kwargs):  # the render batches this rank rendered
        calls.append(1)
        return real(*args, **kwargs)
    lucent_render.render_vis = counted
    sweep_run().save(os.path.join(sys.argv[1], f"sweep-{rank}.npz"))
    n_sweep = len(calls)
    icons_run().save(os.path.join(sys.argv[1], f"icons-{rank}.npz"))
    with open(os.path.join(sys.argv[1], f"calls-{rank}.json"), "w") as f:
        json.dump([n_sweep, len(calls) - n_sweep], f)
''')


def sweep_run():
    """10 (angle, seed) images in batches of 3: 4 render batches, the last one short."""
    render = RenderSettings(steps=3, size=16, model_size=16, transforms=[], seed=7)
    return sweep_combinations(TinyConvNet().eval(), Feature("conv3", 0), Feature("conv3", 1), n_angles=5,
                              n_seeds=2, chunk=3, scale=(1.0, 2.0), render=render)


def icons_run():
    """One icon per occupied cell of a 2 x 2 grid, one icon per render batch."""
    net = TinyConvNet().eval()
    images = torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        points = collect_vectors(net, images, Feature("conv3", 1), "relu2", mode="position", settings=PassSettings(batch_size=8))
    xy = np.random.default_rng(0).uniform(size=(len(points), 2)).astype(np.float32)
    grid = grid_cells(points, AtlasLayout(xy, xy, 5), size=2, min_points=1)
    return render_icons(net, points, grid, RenderSettings(steps=2, transforms=(), seed=5), batch_size=1)


def test_torchrun_sweep_and_icons_equal_the_one_process_run(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    proc = _torchrun([str(script), str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep, icons = sweep_run(), icons_run()
    assert len(icons) >= 3  # more render batches than ranks
    for rank in (0, 1):
        got = CombinationResult.load(tmp_path / f"sweep-{rank}.npz")
        for name in ("theta", "values", "score", "images"):
            torch.testing.assert_close(getattr(got, name), getattr(sweep, name), rtol=1e-5, atol=1e-6, msg=name)
        assert got.scale == sweep.scale and got.info == sweep.info
        ic = AtlasIcons.load(tmp_path / f"icons-{rank}.npz")
        np.testing.assert_array_equal(ic.images, icons.images)
        for name in ("activation", "cosine", "contrast"):
            np.testing.assert_allclose(getattr(ic, name), getattr(icons, name), rtol=1e-5, atol=1e-6, err_msg=name)
        assert ic.params == icons.params and ic.crop_box == icons.crop_box
    calls = [json.loads((tmp_path / f"calls-{rank}.json").read_text()) for rank in (0, 1)]
    assert calls == [[2, (len(icons) + 1) // 2], [2, len(icons) // 2]]  # batches dealt round robin


def test_one_process_chunk_helpers():
    """Without torchrun: chunks in order, seeds unchanged, chunks dealt round robin over the ranks."""
    got = map_chunks(3, lambda c: {"x": np.full(c + 1, c)})
    assert [g["x"].tolist() for g in got] == [[0], [1, 1], [2, 2, 2]]
    assert rank0_seed(None) is None and rank0_seed(4) == 4
    assert chunk_owner(5, 2).tolist() == [0, 1, 0, 1, 0] and chunk_owner(2, 4).tolist() == [0, 1]


ODD_WORKER = textwrap.dedent('''
    import os, sys
    from conftest import TinyConvNet
    from lucent_inhibit.combinations.sweeps import sweep_combinations
    from lucent_inhibit.core.features import Feature
    from lucent_inhibit.core.rendering import RenderSettings
    rank = int(os.environ["RANK"])
    render = RenderSettings(steps=3 + rank, size=16, model_size=16, transforms=[], seed=7)  # rank 1: 4 steps
    try:
        sweep_combinations(TinyConvNet().eval(), Feature("conv3", 0), Feature("conv3", 1), n_angles=5, n_seeds=2,
                           chunk=3, scale=(1.0, 2.0), render=render)
        said = "finished"
    except Exception as exc:
        said = f"{type(exc).__name__}: {exc}"
    with open(os.path.join(sys.argv[1], f"said-{rank}.txt"), "w") as f:
        f.write(said)
''')


def test_ranks_rendering_with_different_settings_are_refused_on_every_rank(tmp_path):
    script = tmp_path / "odd.py"
    script.write_text(ODD_WORKER)
    proc = _torchrun([str(script), str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        said = (tmp_path / f"said-{rank}.txt").read_text()
        assert said.startswith("DistributedError: the ranks of this render disagree") and "settings=" in said, said


def test_digest_tells_models_and_arrays_apart():
    from lucent_inhibit.core.distributed import digest

    a, b = TinyConvNet(seed=0), TinyConvNet(seed=0)
    assert digest(a) == digest(b) != digest(TinyConvNet(seed=1))
    x = np.arange(6, dtype=np.float32)
    assert digest(x) == digest(torch.from_numpy(x)) != digest(x.reshape(2, 3)) != digest(x.astype(np.float64))
    assert digest(torch.ones(2, dtype=torch.bfloat16)) != digest(torch.ones(2))
