"""The report of ``raydetox train``: each run's per-stage validation rows, its test scores beside the
copy and delete reference systems, per-language tables and samples."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from raydetox.experiment import RunResult
from raydetox.results import SUMMARY_METRICS


def comparison_table(systems: dict[str, dict[str, float]], prefix: str = "test_") -> pd.DataFrame:
    """Systems × summary metrics (overall), e.g. curriculum vs baseline vs copy vs delete."""
    return pd.DataFrame(
        {name: {m: scores.get(f"{prefix}{m}", float("nan")) for m in SUMMARY_METRICS} for name, scores in systems.items()}
    ).T


def language_series(scores: dict[str, float], metric: str, prefix: str = "test_") -> pd.Series:
    """One metric per language from a flat score dict (``{prefix}{metric}/{lang}`` keys)."""
    head = f"{prefix}{metric}/"
    return pd.Series({k[len(head):]: v for k, v in scores.items() if k.startswith(head)}, name=metric)


def write_run_report(
    out_dir: Path, runs: dict[str, RunResult], references: dict[str, dict[str, float]]
) -> Path:
    """Markdown report: per-stage rows of each run, test comparison with copy/delete, samples."""
    systems = {name: run.test_metrics for name, run in runs.items()} | references
    table = comparison_table(systems)
    table.to_csv(out_dir / "comparison.csv")
    lines = ["# raydetox train report", "", "## Test split: runs beside the reference systems", ""]
    lines.append(table.round(4).to_markdown())
    for name, run in runs.items():
        cols = [c for c in ("index", "stage", "epochs", "lr", "steps", "train_loss", "seconds", "eval_loss",
                            "eval_copy_rate", "eval_chrf", "eval_bertscore_f1", "eval_toxicity", "eval_j")
                if c in run.stages]
        lines += ["", f"## {name}: per-stage validation", ""]
        lines.append(run.stages[cols].round(4).to_markdown(index=False))
        per_lang = pd.DataFrame({m: language_series(run.test_metrics, m) for m in ("copy_rate", "chrf", "j")})
        lines += ["", f"### {name}: test metrics per language", ""]
        lines.append(per_lang.round(4).to_markdown())
        lines += ["", f"### {name}: samples (toxic / reference / output)", ""]
        for row in run.samples.itertuples(index=False):
            lines.append(f"- [{row.lang}] {row.toxic} → ref: {row.neutral} → out: {row.output}")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
