"""GPU check: two-stage runs of the embedded base on a CUDA GPU, with the figures to record.

    python benchmarks/gpu_check.py                       # bf16, ../shared/data/multilingual_paradetox
    python benchmarks/gpu_check.py --precision fp32 --data PATH --out out/gpu_check
    python benchmarks/gpu_check.py --executor in-process --precision bf16,fp32,bf16

It runs ``experiments/quickstart.yaml`` cut to two orderings of two stages (easy>full, hard>full; no
baseline) with ``ray.gpus_per_worker: 1`` and ``training.bf16`` (``--precision``), then prints, per run,
the wall time, the copy rate and BERTScore of the last stage (validation), and the devices the run
actually used (the model's, generation's and BERTScore's, recorded inside the run by a callback).

``--executor ray`` (default) runs them as a Tune sweep whose trials hold the GPU; ``--executor
in-process`` runs the same orderings one after the other through ``raydetox train``'s path
(:func:`raydetox.experiment.run_training`: the trainer, generation and scoring a trial runs, without
Ray), for a GPU machine where Ray cannot be installed. With several precisions (``bf16,fp32,bf16``)
each is run in turn and the wall times are printed side by side (the first run also fits the judge).
It refuses to run without a CUDA GPU. Paste its output into the README's GPU section with the command
and the date.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/gpu_check.py` from a checkout
    sys.path.insert(0, str(REPO))

from transformers import TrainerCallback  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "multilingual_paradetox"


class DeviceProbe(TrainerCallback):
    """Records, inside a trial, where its model, generation and BERTScore ran (after every stage)."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_stage_end(self, args, state, control, result=None, trainer=None, **_: Any) -> None:
        import torch

        model_device = str(next(trainer.model.parameters()).device)
        record = {
            "stage": result.stage,
            "model": model_device,
            "generation": model_device,  # raydetox.decoding generates on the model's device
            "bertscore": str(trainer.scorer.device),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else 0,
        }
        path = Path(self.out_dir) / f"devices-{args.output_dir.rstrip('/').split('/')[-1]}.jsonl"
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")


ORDERINGS = [["easy", "full"], ["hard", "full"]]


def check_config(data: str, out: Path, precision: str, cache_dir: str | None = None) -> Any:
    """The quickstart config cut to the check's two orderings, on one GPU, at ``precision``."""
    from raydetox.config import load_config

    overrides: dict[str, Any] = {
        "name": f"gpu_check_{precision}",
        "output_dir": str(out / "runs"),
        "data.source": data,
        "sweep.orderings": ORDERINGS,
        "sweep.include_baseline": False,
        "ray.gpus_per_worker": 1,
        "ray.callbacks": [],
    }
    if precision == "bf16":
        overrides["training.bf16"] = True
    if cache_dir:
        overrides["model.cache_dir"] = cache_dir
    return load_config(REPO / "experiments" / "quickstart.yaml", overrides)


def run_with_ray(cfg: Any, out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The two orderings as a Tune sweep; the last stage's validation row of each trial, and errors."""
    from raydetox.results import load_results
    from raydetox.sweep import run_sweep

    results = run_sweep(cfg, storage_path=str(out / "sweeps"), overwrite=True, callbacks=[DeviceProbe(str(out))])
    rows = load_results(out / "sweeps" / cfg.name)
    last = rows[(rows["phase"] == "stage") & (rows["stage_index"] == rows["stage_index"].max())]
    return last.to_dict("records"), [str(r.error) for r in results if r.error]


def run_in_process(cfg: Any, out: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The sweep's trained variants one after the other through ``raydetox train``'s path (no Ray): the
    same schedules (ordering, epochs, lr) as the trials, decoded with the config's decoding only."""
    from raydetox.config import StageConfig
    from raydetox.data.prepare import prepare
    from raydetox.experiment import run_training
    from raydetox.pretraining_corpus import base_texts
    from raydetox.modeling import resolve_base
    from raydetox.sweep import variants

    prepared = prepare(cfg, out / "data")
    resolve_base(cfg.model, texts=base_texts(cfg, prepared))  # built (or found) once, as a sweep does
    last: list[dict[str, Any]] = []
    for variant in variants(cfg):
        if not variant["schedule"]:
            continue  # the untrained variant trains nothing: no device to check
        schedule = [StageConfig(**stage) for stage in variant["schedule"]]
        run = run_training(cfg, prepared, out / "runs" / variant["ordering"].replace(">", "-"), schedule,
                           callbacks=[DeviceProbe(str(out))], resume=False)
        last.append({"ordering": variant["ordering"], **run.stages.iloc[-1].to_dict()})
    return last, []


def check(args: argparse.Namespace, precision: str, name: str) -> tuple[bool, float]:
    """One precision's runs under ``--out``/``name``; prints their figures and returns (every stage on
    the GPU, wall seconds)."""
    import torch

    out = Path(args.out).resolve() / name
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("devices-*.jsonl"):
        stale.unlink()
    cfg = check_config(args.data, out, precision, args.cache_dir)
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    run = run_with_ray if args.executor == "ray" else run_in_process
    last, errors = run(cfg, out)
    wall = time.perf_counter() - start
    devices = [json.loads(line) for f in sorted(out.glob("devices-*.jsonl")) for line in f.read_text().splitlines()]
    print(f"gpu_check: {torch.cuda.get_device_name()}, torch {torch.__version__}, precision {precision}, "
          f"executor {args.executor}")
    print(f"wall time: {wall:.1f} s ({len(last)} runs, {len(errors)} failed)")
    for row in last:
        print(f"  {row['ordering']}: validation copy rate {row['eval_copy_rate']:.3f}, "
              f"BERTScore F1 {row['eval_bertscore_f1']:.3f}, J {row['eval_j']:.3f}, "
              f"train loss {row['train_loss']:.3f}")
    for record in devices:
        print(f"  stage {record['stage']}: model {record['model']}, generation {record['generation']}, "
              f"BERTScore {record['bertscore']}, peak GPU memory {record['peak_gpu_mib']} MiB")
    for error in errors:
        print(f"  failed: {error}")
    on_gpu = bool(devices) and all(r["model"].startswith("cuda") and r["bertscore"].startswith("cuda")
                                   for r in devices)
    print("devices: every stage trained, generated and scored on the GPU" if on_gpu
          else "devices: NOT every stage ran on the GPU (see above)")
    return on_gpu and not errors, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(REPO / "out" / "gpu_check"))
    parser.add_argument("--precision", default="bf16",
                        help="bf16, fp32, or several in turn (comma-separated, e.g. bf16,fp32,bf16)")
    parser.add_argument("--executor", choices=["ray", "in-process"], default="ray")
    parser.add_argument("--cache-dir", help="model.cache_dir: where the embedded base is cached/built")
    args = parser.parse_args(argv)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or any(p not in ("bf16", "fp32") for p in precisions):
        parser.error(f"--precision: {args.precision!r}: each must be bf16 or fp32")

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); nothing was run. "
              "Run it on a machine with a GPU and a CUDA build of torch (make install TORCH_SPEC=...).",
              file=sys.stderr)
        return 2

    walls: list[tuple[str, float]] = []
    ok = True
    for i, precision in enumerate(precisions):
        passed, wall = check(args, precision, f"{i}-{precision}" if len(precisions) > 1 else precision)
        walls.append((precision, wall))
        ok = ok and passed
    if len(walls) > 1:
        # the first run also fits the judge and warms CUDA: repeat a precision (bf16,fp32,bf16) to see it
        first = walls[0][1]
        print("wall time, run by run (ratio to the first): " +
              ", ".join(f"{p} {w:.1f} s ({w / first:.2f})" for p, w in walls))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
