"""Start-up cost of the command line: ``lucent-inhibit --help`` and ``lucent-inhibit scan --help``
against the peer ``python -c "import torch"`` (what any command that imported the library eagerly
would pay before printing a word).

The command line is generated from the stage registry without importing torch (each stage imports
the library inside its run function), so both help commands should take a fraction of the torch
import; the target is under 1.5 s each. Each command runs ``--repeats`` times in a fresh process,
interleaved; the JSON records the median and the spread (min, max) of each. ratio = median torch import
time / median time of the slower help command (above 1: help is that many times faster than importing
torch alone).

Usage: python benchmarks/cli_help.py [--repeats 5]
Writes benchmarks/results/cli_help.json.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from _common import write_result  # noqa: E402

SCRIPT = os.path.join(os.path.dirname(sys.executable), "lucent-inhibit")  # the installed console script
CLI = [SCRIPT] if os.path.exists(SCRIPT) else [sys.executable, "-m", "lucent_inhibit"]
COMMANDS = {
    "lucent-inhibit --help": CLI + ["--help"],
    "lucent-inhibit scan --help": CLI + ["scan", "--help"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
}


def timed(argv) -> float:
    t = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="runs of each command (default 5)")
    a = ap.parse_args()
    times = {name: [] for name in COMMANDS}
    for _ in range(a.repeats):
        for name, argv in COMMANDS.items():
            times[name].append(timed(argv))
    details = {name: {"median_s": round(statistics.median(t), 3), "min_s": round(min(t), 3),
                      "max_s": round(max(t), 3), "runs_s": [round(v, 3) for v in t]} for name, t in times.items()}
    for name, d in details.items():
        print(f"{name:32s} median {d['median_s']:.3f} s  (min {d['min_s']:.3f}, max {d['max_s']:.3f})")
    slowest = max(details[n]["median_s"] for n in list(COMMANDS)[:2])
    ratio = details["python -c 'import torch'"]["median_s"] / slowest
    print(f"ratio torch import / slower help: {ratio:.2f}x (help target < 1.5 s)")
    write_result("cli_help", "python -c 'import torch' (fresh process)", round(ratio, 3), details, threads=1)


if __name__ == "__main__":
    main()
