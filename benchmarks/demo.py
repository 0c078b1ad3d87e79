"""The main job's cost: wall time and peak memory of `lucent-inhibit demo` (all stages, default sizes).

Usage: python benchmarks/demo.py [--out DIR]. Runs the demo in a child process (the CLI the README names),
measures its wall time and the peak resident memory of the process tree, and records both against the budget
of the main job (10 minutes, 4 GB on 2 idle cores): ratio = budget seconds / wall seconds (> 1: within budget).
"""
import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

from _common import write_result

BUDGET_S = 600.0
BUDGET_RSS_MIB = 4096.0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=None, help="report folder (default: a temporary folder, removed after)")
    args = ap.parse_args()
    out = args.out or os.path.join(tempfile.mkdtemp(prefix="demo-bench-"), "report")
    exe = os.path.join(os.path.dirname(sys.executable), "lucent-inhibit")
    t0 = time.perf_counter()
    proc = subprocess.run([exe, "demo", "--out", out], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if proc.returncode != 0:
        sys.exit(f"demo failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    print(f"demo: {wall:.0f} s wall, peak RSS {peak_mib:.0f} MiB (budget {BUDGET_S:.0f} s, {BUDGET_RSS_MIB:.0f} MiB)")
    write_result(
        "demo", "the main job's budget: 10 minutes on 2 idle cores (ratio = budget / wall time)", BUDGET_S / wall,
        {"wall_s": round(wall, 1), "peak_rss_mib": round(peak_mib), "budget_s": BUDGET_S,
         "budget_rss_mib": BUDGET_RSS_MIB, "within_time": wall <= BUDGET_S, "within_memory": peak_mib <= BUDGET_RSS_MIB},
    )


if __name__ == "__main__":
    main()
