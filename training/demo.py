"""The demo behind ``sona serve`` without a checkpoint: a model trained on synthetic data.

It writes a synthetic dataset, trains the ``tiny`` preset on it and keeps the result under
``ROOT`` (so the second start is instant), and marks the checkpoint as a demo: the service
says so in ``/readyz`` and its logs. It is a toy for trying the API, not a re-ID model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from model import load_checkpoint, save_checkpoint

from .config import TRAIN_PRESETS
from .datasets import load_dataset
from .options import DEMO_EPOCHS
from .synthetic import is_complete, make_dataset
from .trainer import Trainer

__all__ = ["DEMO_EPOCHS", "Demo", "build_demo", "demo_data"]


@dataclass(frozen=True)
class Demo:
    checkpoint: Path
    data: Path  # the synthetic dataset (Market-1501 layout)

    @property
    def gallery_folder(self) -> Path:
        return self.data / "bounding_box_test"

    def example_query(self) -> Path:
        return sorted((self.data / "query").glob("*.jpg"))[0]


def demo_data(root: Path, *, identities: int = 100, log=print) -> Path:
    """The demo's synthetic dataset under ``root`` (Market-1501 layout), made if missing."""
    data = root / "synthetic"
    if not is_complete(data):
        log(f"demo: writing a synthetic dataset ({identities} identities) to {data}")
        make_dataset(data, identities=identities, cameras=6, seed=0, overwrite=True)
    return data


def build_demo(
    root: Path,
    *,
    identities: int = 100,
    epochs: int | None = DEMO_EPOCHS,
    progress: bool = True,
    log=print,
) -> Demo:
    """Make (or reuse) the demo dataset and checkpoint under ``root``."""
    checkpoint = root / "demo.pt"
    was_complete = is_complete(root / "synthetic")  # a remade dataset means training again
    data = demo_data(root, identities=identities, log=log)
    if checkpoint.is_file() and was_complete:
        return Demo(checkpoint, data)
    config = TRAIN_PRESETS["tiny"]
    if epochs is not None:
        config = dataclasses.replace(
            config,
            epochs=epochs,
            warmup_epochs=min(config.warmup_epochs, epochs),
            milestones=tuple(m for m in config.milestones if m < epochs),
        )
    log(f"demo: training the tiny preset for {config.epochs} epochs (once; cached in {root})")
    result = Trainer(
        config, load_dataset("synthetic", data), root / "run", progress=progress, log=log
    ).fit()
    source = root / "run" / ("best.pt" if result.best else "last.pt")
    net, meta = load_checkpoint(source)
    save_checkpoint(
        checkpoint,
        net,
        **meta,
        demo=True,
        note="DEMO: trained on synthetic data; not a real re-ID model",
    )
    return Demo(checkpoint, data)
