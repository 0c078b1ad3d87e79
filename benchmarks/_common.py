"""What every benchmark script shares: the machine description and the JSON result it writes."""
import json
import os
import platform
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def machine(threads=None) -> str:
    """CPU architecture, core count, torch version and the torch threads the run used."""
    threads = torch.get_num_threads() if threads is None else threads
    return f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}, {threads} threads"


def write_result(name: str, peer: str, ratio: float, details: dict, threads=None) -> str:
    """Write benchmarks/results/<name>.json (keys: name, command, peer, ratio, details, machine)."""
    result = {
        "name": name,
        "command": " ".join(["python", f"benchmarks/{name}.py"] + sys.argv[1:]),
        "peer": peer,
        "ratio": ratio,
        "details": details,
        "machine": machine(threads),
    }
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", f"{name}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote benchmarks/results/{name}.json")
    return path


class LazyImages:
    """``n`` deterministic (3, size, size) images in [0, 1], each made when it is read (no memory held)."""

    def __init__(self, n: int, size: int = 64):
        self.n, self.size, self.identity = n, size, f"lazy-noise(n={n}, size={size})"

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        import torch
        import torch.nn.functional as F

        if not 0 <= int(i) < self.n:
            raise IndexError(i)
        small = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(int(i)))
        return F.interpolate(small, size=(self.size, self.size), mode="bilinear", align_corners=False)[0]


def timed(fn):
    """``(seconds, fn())``: the wall time of one call."""
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def proc_status(key: str) -> int:
    """``key`` (VmRSS, VmHWM) of /proc/self/status in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/self/status has no {key}")


def reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def captum_runner(model, feat, modules, x_norm, logit_layer):
    """A function running captum's LayerGradientXActivation for ``feat`` on ``modules`` (a list of scores):
    a logit (``feat.layer == logit_layer``) as captum's ``target``; an intermediate feature through a
    ``forward_func`` that runs the whole network and reads the feature layer with a hook (captum's natural use)."""
    from captum.attr import LayerGradientXActivation

    from lucent_inhibit.core.layers import get_layer

    if feat.layer == logit_layer:
        lga = LayerGradientXActivation(model, modules)
        return lambda: lga.attribute(x_norm, target=feat.unit)
    feature_module = get_layer(model, feat.layer)

    def forward(x):
        out = {}
        h = feature_module.register_forward_hook(lambda m, i, o: out.__setitem__("a", o))
        try:
            model(x)
        finally:
            h.remove()
        return feat(out["a"])

    lga = LayerGradientXActivation(forward, modules)
    return lambda: lga.attribute(x_norm)


def time_pair(run_ours, run_captum, repeats):
    """Alternating wall-clock times (s) of both sides: (ours, captum), ``repeats`` each."""
    t_ours, t_captum = [], []
    for _ in range(repeats):
        for fn, times in ((run_ours, t_ours), (run_captum, t_captum)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return t_ours, t_captum
