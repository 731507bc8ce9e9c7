"""What Ray Train's own machinery costs per run: ``TorchTrainer.fit()`` of a function that only reports.

Each variant runs in a fresh process (the local, loopback Ray that ``raydetox sweep`` starts, with its
environment: a 0.2 s controller poll) doing ``--fits`` fits of one 1-CPU worker one after another; the
rounds alternate the variants, so a slow spell of the machine hits all alike. The first fit of a process
also starts Ray Train's autoscaling coordinator and is reported apart. Printed: the median fit of each
variant and its ratio to Ray's own ``TorchTrainer``.

    .venv/bin/python benchmarks/ray_train_start.py --fits 5 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "TorchTrainer (Ray's defaults)": "default",
    "without the placement-group cleaner (raydetox, local Ray)": "no_cleaner",
}


def _fits(variant: str, fits: int, storage: str) -> list[float]:
    """In this process: start the sweep's local Ray and time ``fits`` fits of ``variant``."""
    from raydetox.sweep import init_ray

    init_ray(num_cpus=2)
    import ray
    from ray import train
    from ray.train.torch import TorchTrainer

    from raydetox.compat import without_placement_group_cleaner

    trainer_cls = TorchTrainer if variant == "default" else without_placement_group_cleaner(TorchTrainer)

    def report_once() -> None:
        train.report({"done": 1})

    walls = []
    for i in range(fits):
        start = time.perf_counter()
        trainer_cls(report_once, scaling_config=train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                    run_config=train.RunConfig(name=f"{variant}-{i}", storage_path=storage)).fit()
        walls.append(time.perf_counter() - start)
    ray.shutdown()
    return walls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fits", type=int, default=5, help="fits per process")
    parser.add_argument("--rounds", type=int, default=2, help="processes per variant, alternating")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as storage:
        if args.variant:
            print(json.dumps(_fits(args.variant, args.fits, storage)))
            return 0
        first: dict[str, list[float]] = {name: [] for name in VARIANTS}
        later: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(args.rounds):
            for name, variant in VARIANTS.items():
                out = subprocess.run([sys.executable, __file__, "--variant", variant, "--fits", str(args.fits)],
                                     check=True, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
                walls = json.loads(out.stdout.strip().splitlines()[-1])
                first[name].append(walls[0])
                later[name].extend(walls[1:])
    base = statistics.median(later[next(iter(VARIANTS))])
    print(f"Ray Train fit of a function that only reports; {args.rounds} processes × {args.fits} fits per variant")
    print("| variant | first fit s (median) | later fits s (median) | min–max s | ratio to Ray's defaults |")
    print("|---|---|---|---|---|")
    for name in VARIANTS:
        med = statistics.median(later[name])
        print(f"| {name} | {statistics.median(first[name]):.1f} | {med:.1f} | {min(later[name]):.1f}–"
              f"{max(later[name]):.1f} | {med / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
