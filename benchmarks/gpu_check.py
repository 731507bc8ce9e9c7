"""GPU check: a two-stage sweep of the embedded base on a CUDA GPU, with the figures to record.

    python benchmarks/gpu_check.py                       # bf16, ../shared/data/multilingual_paradetox
    python benchmarks/gpu_check.py --precision fp32 --data PATH --out out/gpu_check

It runs ``experiments/quickstart.yaml`` cut to two orderings of two stages (easy>full, hard>full; no
baseline) with ``ray.gpus_per_worker: 1`` and ``training.bf16`` (``--precision``), then prints, per trial,
the wall time, the copy rate and BERTScore of the last stage, and the devices the trial actually used
(the model's, generation's and BERTScore's, recorded inside the trial by a callback). It refuses to run
without a CUDA GPU. Paste its output into the README's GPU section with the command and the date.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--out", default=str(REPO / "out" / "gpu_check"))
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); nothing was run. "
              "Run it on a machine with a GPU and a CUDA build of torch (make install TORCH_SPEC=...).",
              file=sys.stderr)
        return 2

    from raydetox.config import load_config
    from raydetox.results import load_results
    from raydetox.sweep import run_sweep

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, Any] = {
        "name": "gpu_check",
        "output_dir": str(out / "runs"),
        "data.source": args.data,
        "sweep.orderings": [["easy", "full"], ["hard", "full"]],
        "sweep.include_baseline": False,
        "ray.gpus_per_worker": 1,
        "ray.callbacks": [],
    }
    if args.precision == "bf16":
        overrides["training.bf16"] = True
    cfg = load_config(REPO / "experiments" / "quickstart.yaml", overrides)
    start = time.perf_counter()
    results = run_sweep(cfg, storage_path=str(out / "sweeps"), overwrite=True, callbacks=[DeviceProbe(str(out))])
    wall = time.perf_counter() - start
    errors = [r.error for r in results if r.error]
    rows = load_results(out / "sweeps" / cfg.name)
    last = rows[(rows["phase"] == "stage") & (rows["stage_index"] == rows["stage_index"].max())]
    devices = [json.loads(line) for f in sorted(out.glob("devices-*.jsonl")) for line in f.read_text().splitlines()]
    print(f"gpu_check: {torch.cuda.get_device_name()}, torch {torch.__version__}, precision {args.precision}")
    print(f"sweep wall time: {wall:.1f} s ({len(results)} trials, {len(errors)} failed)")
    for row in last.itertuples():
        print(f"  {row.ordering}: copy rate {row.eval_copy_rate:.3f}, BERTScore F1 {row.eval_bertscore_f1:.3f}, "
              f"train loss {row.train_loss:.3f}")
    for record in devices:
        print(f"  stage {record['stage']}: model {record['model']}, generation {record['generation']}, "
              f"BERTScore {record['bertscore']}, peak GPU memory {record['peak_gpu_mib']} MiB")
    on_gpu = devices and all(r["model"].startswith("cuda") and r["bertscore"].startswith("cuda") for r in devices)
    print("devices: every stage trained, generated and scored on the GPU" if on_gpu
          else "devices: NOT every stage ran on the GPU (see above)")
    return 0 if on_gpu and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
