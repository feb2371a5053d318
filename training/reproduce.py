"""Table 5 by one command: every row x seed trained, scored as the paper, and tabulated.

Each run lives in ``OUT/<row>/seed<k>/`` (the trainer's folder, so an interrupted run resumes
from its last epoch) and ends with ``result.json``: a run that has one is never trained
again. Every run is scored at its last epoch, on the test set, by Euclidean distance on the
raw flip-averaged features, without re-ranking: the paper's protocol. The table gives mean ±
standard deviation over seeds beside the paper's published figure and the difference.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from model.variants import apply_variant

from .config import TrainConfig
from .datasets import ReIDDataset
from .paper_table5 import METRICS, paper_figure
from .sampler import PKSampler

__all__ = [
    "Cost",
    "Run",
    "Summary",
    "estimate_cost",
    "plan",
    "run_all",
    "run_config",
    "summarize",
    "write_table",
]

_LABELS = {"mAP": "mAP", "rank1": "R-1", "rank5": "R-5", "rank10": "R-10"}


@dataclass(frozen=True)
class Run:
    row: str
    seed: int
    folder: Path

    @property
    def result_file(self) -> Path:
        return self.folder / "result.json"

    @property
    def done(self) -> bool:
        return self.result_file.is_file()


def plan(rows: Sequence[str], seeds: int, out: str | Path) -> list[Run]:
    """Every row x seed, seeds 0..seeds-1, in table order."""
    return [
        Run(row, seed, Path(out) / row / f"seed{seed}") for row in rows for seed in range(seeds)
    ]


def run_config(base: TrainConfig, run: Run) -> TrainConfig:
    """The base recipe with the run's variant and seed, scored once at the end by the paper's
    distance (evaluations on the way would only cost time: the test set chooses nothing)."""
    model = apply_variant(base.model, run.row)
    return dataclasses.replace(
        base, model=model, seed=run.seed, distance="euclidean", eval_every=0, val_identities=0
    )


def run_all(
    runs: Sequence[Run],
    base: TrainConfig,
    data: ReIDDataset,
    *,
    train: Callable[[TrainConfig, Path], list[dict[str, Any]]],
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train and score each run not done yet; return every run's result, done ones included.

    ``train(config, folder)`` trains (resuming) and returns the run's history; its last row
    must hold the test-set metrics.
    """
    results = []
    for index, run in enumerate(runs, 1):
        if run.done:
            log(f"[{index}/{len(runs)}] {run.row} seed {run.seed}: done, skipped")
        else:
            log(f"[{index}/{len(runs)}] {run.row} seed {run.seed}: training in {run.folder}")
            config = run_config(base, run)
            start = time.perf_counter()
            last = train(config, run.folder)[-1]
            if "mAP" not in last:
                raise ValueError(f"{run.folder}: the last epoch was not scored on the test set")
            result = {
                "row": run.row,
                "seed": run.seed,
                "dataset": data.name,
                "epochs": last["epoch"],
                "distance": config.distance,
                **{m: 100 * last[m] for m in (*METRICS, "mINP")},
                "seconds_this_call": round(time.perf_counter() - start, 1),
            }
            tmp = run.result_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(result, indent=2) + "\n")
            tmp.replace(run.result_file)
        results.append(json.loads(run.result_file.read_text()))
    return results


@dataclass(frozen=True)
class Summary:
    """One cell: our mean ± std over seeds, and the paper's figure where it has one."""

    row: str
    metric: str
    runs: int
    mean: float
    std: float | None
    paper: float | None
    paper_std: float | None

    @property
    def difference(self) -> float | None:
        return None if self.paper is None else self.mean - self.paper


def summarize(results: Sequence[dict[str, Any]], dataset: str) -> list[Summary]:
    """Cells in row order (as first seen in ``results``), then metric order."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for result in results:
        rows.setdefault(result["row"], []).append(result)
    cells = []
    for row, found in rows.items():
        for metric in METRICS:
            values = [r[metric] for r in found]
            published = paper_figure(dataset, row, metric)
            cells.append(
                Summary(
                    row,
                    metric,
                    len(values),
                    statistics.fmean(values),
                    statistics.stdev(values) if len(values) > 1 else None,
                    published[0] if published else None,
                    published[1] if published else None,
                )
            )
    return cells


def _cell(summary: Summary) -> str:
    text = f"{summary.mean:.2f}"
    if summary.std is not None:
        text += f" ± {summary.std:.2f}"
    if summary.paper is not None:
        text += f" ({summary.paper:.2f}, {summary.difference:+.2f})"
    return text


def markdown(cells: Sequence[Summary], dataset: str) -> str:
    rows = list(dict.fromkeys(c.row for c in cells))
    by = {(c.row, c.metric): c for c in cells}
    lines = [
        f"Table 5 on {dataset}: mean ± std over seeds (the paper's mean, our difference)",
        "",
        "| Model | runs | " + " | ".join(_LABELS[m] for m in METRICS) + " |",
        "|---|---:|" + "---:|" * len(METRICS),
    ]
    for row in rows:
        runs = by[(row, METRICS[0])].runs
        lines.append(
            f"| {row} | {runs} | " + " | ".join(_cell(by[(row, m)]) for m in METRICS) + " |"
        )
    return "\n".join(lines) + "\n"


def csv_text(cells: Sequence[Summary]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "metric", "runs", "mean", "std", "paper", "paper_std", "difference"])
    for c in cells:
        optional = (c.std, c.paper, c.paper_std, c.difference)
        writer.writerow(
            [c.row, c.metric, c.runs, f"{c.mean:.4f}"]
            + ["" if v is None else f"{v:.4f}" for v in optional]
        )
    return buffer.getvalue()


def write_table(results: Sequence[dict[str, Any]], dataset: str, out: str | Path) -> str:
    """Write ``table5.md`` and ``table5.csv`` into ``out``; return the Markdown."""
    cells = summarize(results, dataset)
    text = markdown(cells, dataset)
    Path(out, "table5.md").write_text(text)
    Path(out, "table5.csv").write_text(csv_text(cells))
    return text


class Cost(NamedTuple):
    batches_per_epoch: int
    train_images: int  # per run
    flops: dict[str, float]  # per run of each row


def estimate_cost(
    base: TrainConfig, data: ReIDDataset, rows: Sequence[str], macs: Callable[[str], int]
) -> Cost:
    """Counted work of one run per row.

    ``macs(row)`` is one image's forward multiply-adds for that row's network. Training
    counts three forward passes per image (a backward costs about two), scoring a
    flip-averaged forward (two) per query and gallery image, once at the end.
    """
    batches = len(
        PKSampler(
            [r.pid for r in data.train],
            base.ids_per_batch,
            base.images_per_id,
            epoch_unit=base.epoch_unit,
        )
    )
    images = batches * base.batch_size * base.epochs
    test_images = len(data.query) + len(data.gallery)
    flops = {row: 2.0 * macs(row) * (3 * images + 2 * test_images) for row in rows}
    return Cost(batches, images, flops)
