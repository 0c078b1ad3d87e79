"""What every benchmark script shares: the machine description and the JSON result it writes."""
import json
import os
import platform
import sys

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
