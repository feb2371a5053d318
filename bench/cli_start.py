"""How long ``sona --help`` takes: wall and CPU seconds of the installed command, N runs.

    python bench/cli_start.py --runs 10

Commands load torch only when they run, so help, a typo and ``sona keys list`` answer at
once. Wall time on a busy machine is noisy; CPU seconds (user + sys of the child) are not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run_once(command: list[str]) -> tuple[float, float]:
    """(wall, cpu) seconds of one run of ``command``."""
    before = os.times()
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs timed (default 10)")
    args = parser.parse_args()
    sona = shutil.which("sona") or str(Path(sys.executable).with_name("sona"))
    for argv in (["--help"], ["serve", "--help"], ["footage", "add", "--help"]):
        command = [sona, *argv]
        run_once(command)  # warm the file cache
        runs = [run_once(command) for _ in range(args.runs)]
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        name = "sona " + " ".join(argv)
        print(f"{name:<27} median wall {wall:.3f} s, cpu {cpu:.3f} s ({args.runs} runs)")


if __name__ == "__main__":
    main()
