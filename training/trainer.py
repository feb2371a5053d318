"""The training loop: PK batches, both branches' losses, Adam on the paper's schedule.

A run lives in one folder:

    last.pt        model checkpoint (servable) plus the training state: optimizer, epoch,
                   random generators, history. Written atomically after every epoch; a run
                   started again on the same folder resumes from it as if never stopped.
                   The paper's figures are this one's: a fixed schedule, the last epoch.
    best.pt        only with ``val_identities``: the checkpoint with the best mAP on those
                   held-out training identities. The test set never chooses a checkpoint.
    metrics.jsonl  one JSON line per epoch: loss, learning rate, images/s, and metrics.
    curves.png     those as curves, redrawn at each evaluation and at the end.
    config.json    the training configuration.

Evaluations every ``eval_every`` epochs score the validation split when there is one, else
the test set (for the curves only); the last epoch is always scored on the test set.

CUDA when present, with bf16 autocast (fp16 and a gradient scaler where bf16 is missing) and
channels_last; CPU otherwise. Under ``torchrun`` every process trains on its share of each
batch's identities through DistributedDataParallel (NCCL on CUDA, gloo on CPU); rank 0
evaluates, logs and writes the files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from model import SONANet
from model.checkpoint import (
    CheckpointError,
    atomic_torch_save,
    checkpoint_payload,
    read_checkpoint,
    save_checkpoint,
)
from model.device import resolve_device

from .config import TrainConfig
from .data import BatchAugment, ImageDataset
from .datasets import ReIDDataset, require_evaluable
from .datasets.base import DatasetError
from .datasets.validation import hold_out_identities
from .features import evaluate_net
from .finetune import load_init
from .losses import ReIDLoss
from .sampler import PKSampler
from .schedule import learning_rate
from .track_sampler import CompanionSampler

__all__ = ["TrainResult", "Trainer"]


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None


class Trainer:
    """Trains SONA-Net on ``data.train``, evaluating on ``data.query``/``data.gallery``."""

    def __init__(
        self,
        config: TrainConfig,
        data: ReIDDataset,
        run_dir: str | Path,
        *,
        device: str = "auto",
        workers: int = 2,
        preload: bool = True,
        progress: bool = True,
        stop_after: int | None = None,
        log: Callable[[str], None] = print,
        companions: Mapping[int, Sequence[int]] | None = None,
    ) -> None:
        if not data.train:
            raise DatasetError(f"{data.name} at {data.root}: no training images")
        self.data = data
        self.run_dir = Path(run_dir)
        self.workers = workers
        self.preload = preload
        self.progress = progress
        self.stop_after = stop_after  # stop (resumably) after this many epochs in this call
        # identities seen together with each (by training pid): batched together as hard
        # negatives (training/track_sampler.py) instead of PK batches drawn at random
        self.companions = companions
        self.log = log
        self.distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self.device = resolve_device(device)
        if self.distributed and not dist.is_initialized():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = dist.get_world_size() if self.distributed else 1
        self.is_main = self.rank == 0
        self.validation: ReIDDataset | None = None
        if config.val_identities:
            data, self.validation = hold_out_identities(
                data, config.val_identities, seed=config.seed
            )
            self.data = data
        model_config = dataclasses.replace(config.model, num_classes=data.num_train_pids)
        self.config = dataclasses.replace(config, model=model_config)
        self.evaluable = bool(data.query and data.gallery)
        if self.evaluable:
            try:
                require_evaluable(data)
            except DatasetError as exc:  # trainable all the same; say why nothing is scored
                self.evaluable = False
                if self.rank == 0:
                    log(f"training without evaluation: {exc}")

    # -- set-up -------------------------------------------------------------------------

    def _amp_dtype(self) -> torch.dtype | None:
        if self.device.type != "cuda" or not self.config.amp:
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _build(self) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.net = SONANet(cfg.model)
        if cfg.init:  # resuming overwrites these with the run's own weights
            load_init(self.net, cfg.init)
        self.net = self.net.to(self.device)
        if self.device.type == "cuda" and cfg.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.model: torch.nn.Module = self.net
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        self.optimizer = torch.optim.Adam(
            self.net.parameters(), lr=learning_rate(cfg, 0), weight_decay=cfg.weight_decay
        )
        amp = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
        self.criterion = ReIDLoss(cfg.triplet_margin, cfg.label_smoothing)
        self.augment = BatchAugment(cfg.cutout, cfg.cutout_prob, cfg.flip_prob)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1 + self.rank)
        size = cfg.model.input_size
        self.train_images = ImageDataset(self.data.train, size, preload=self.preload)
        self.sampler: PKSampler | CompanionSampler = PKSampler(
            self.train_images.pids.tolist(),
            cfg.ids_per_batch,
            cfg.images_per_id,
            seed=cfg.seed,
            rank=self.rank,
            world_size=self.world_size,
            epoch_unit=cfg.epoch_unit,
        )
        if self.companions is not None:
            self.sampler = CompanionSampler(
                self.train_images.pids.tolist(),
                cfg.ids_per_batch,
                cfg.images_per_id,
                self.companions,
                seed=cfg.seed,
                rank=self.rank,
                world_size=self.world_size,
            )
        self.loader = DataLoader(
            self.train_images,
            batch_sampler=self.sampler,
            num_workers=0 if self.train_images.images is not None else self.workers,
            pin_memory=self.device.type == "cuda",
        )
        self.test_images = self.val_images = None
        if self.evaluable and self.is_main:
            self.test_images = (
                ImageDataset(self.data.query, size, preload=self.preload),
                ImageDataset(self.data.gallery, size, preload=self.preload),
            )
        if self.validation is not None and self.is_main:
            self.val_images = (
                ImageDataset(self.validation.query, size, preload=self.preload),
                ImageDataset(self.validation.gallery, size, preload=self.preload),
            )

    # -- state --------------------------------------------------------------------------

    def _training_state(self, epoch: int, history: list, best: dict | None) -> dict[str, Any]:
        state: dict[str, Any] = {
            "config": self.config.to_dict(),
            "epoch": epoch,  # epochs completed
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "history": history,
            "best": best,
        }
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return state

    def _resume(self) -> tuple[int, list, dict | None]:
        path = self.run_dir / "last.pt"
        if not path.exists():
            return 0, [], None
        payload = read_checkpoint(path)
        state = payload.get("training")
        if not isinstance(state, dict):
            raise CheckpointError(
                f"{path} holds no training state; start a new run in another folder"
            )
        if state["config"] != self.config.to_dict():
            raise CheckpointError(
                f"{self.run_dir} holds a run with another configuration; use another --output "
                "folder, or the same options as that run to resume it"
            )
        self.net.load_state_dict(payload["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        return int(state["epoch"]), list(state["history"]), state["best"]

    def _save_last(self, epoch: int, history: list, best: dict | None) -> None:
        payload = checkpoint_payload(self.net, epoch=epoch, dataset=self.data.name)
        payload["training"] = self._training_state(epoch, history, best)
        atomic_torch_save(payload, self.run_dir / "last.pt")

    # -- the loop -----------------------------------------------------------------------

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.config
        lr = learning_rate(cfg, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.sampler.set_epoch(epoch)
        self.model.train()
        amp = self._amp_dtype()
        totals = {"loss": 0.0, "triplet": 0.0, "cross_entropy": 0.0}
        seen, steps, start = 0, 0, time.perf_counter()
        bar = tqdm(
            self.loader,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            leave=False,
            disable=not (self.progress and self.is_main),
            dynamic_ncols=True,
        )
        for images, pids, _ in bar:
            images = images.to(self.device, non_blocking=True)
            pids = pids.to(self.device, non_blocking=True)
            x = self.augment(images, self.generator)
            if self.device.type == "cuda" and cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            autocast = (
                torch.autocast(self.device.type, dtype=amp) if amp else contextlib.nullcontext()
            )
            with autocast:
                parts = self.criterion(self.model(x), pids)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(parts.total).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            steps += 1
            seen += images.shape[0] * self.world_size
            totals["loss"] += parts.total.item()
            totals["triplet"] += parts.triplet.item()
            totals["cross_entropy"] += parts.cross_entropy.item()
            rate = seen / (time.perf_counter() - start)
            bar.set_postfix(
                loss=f"{totals['loss'] / steps:.3f}", lr=f"{lr:.1e}", img_s=f"{rate:.0f}"
            )
        seconds = time.perf_counter() - start
        row = {k: v / max(steps, 1) for k, v in totals.items()}
        return row | {"lr": lr, "images_per_s": seen / seconds, "seconds": seconds}

    def _evaluate(self, validation: bool = False) -> dict[str, float]:
        """Test-set metrics, or the validation split's with keys prefixed ``val_``."""
        data, (query, gallery) = (
            (self.validation, self.val_images) if validation else (self.data, self.test_images)
        )
        metrics = evaluate_net(
            self.net,
            data,
            self.device,
            query=query,
            gallery=gallery,
            distance=self.config.distance,
            workers=self.workers,
        )
        prefix = "val_" if validation else ""
        return {
            f"{prefix}rank1": metrics.rank1,
            f"{prefix}rank5": metrics.rank5,
            f"{prefix}rank10": metrics.rank10,
            f"{prefix}mAP": metrics.mAP,
            f"{prefix}mINP": metrics.mINP,
        }

    def fit(self, resume: bool = True) -> TrainResult:
        cfg = self.config
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        self._build()
        start, history, best = self._resume() if resume else (0, [], None)
        if start and self.is_main:
            self.log(f"resuming {self.run_dir} after epoch {start}")
        if self.is_main:
            if start == 0:  # a fresh run: nothing of an earlier one may mix into its files
                for name in ("metrics.jsonl", "best.pt"):
                    (self.run_dir / name).unlink(missing_ok=True)
            (self.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        end = cfg.epochs if self.stop_after is None else min(cfg.epochs, start + self.stop_after)
        for epoch in range(start, end):
            row = {"epoch": epoch + 1} | self._train_epoch(epoch)
            last = epoch + 1 == cfg.epochs
            due = cfg.eval_every and (epoch + 1) % cfg.eval_every == 0
            if self.is_main and self.validation is not None and (due or last):
                row |= self._evaluate(validation=True)
            if self.is_main and self.evaluable and (last or (due and self.validation is None)):
                row |= self._evaluate()
            if self.is_main:
                history.append(row)
                with (self.run_dir / "metrics.jsonl").open("a") as handle:
                    handle.write(json.dumps(row) + "\n")
                if "val_mAP" in row and (best is None or row["val_mAP"] > best["val_mAP"]):
                    best = row
                    save_checkpoint(
                        self.run_dir / "best.pt", self.net, **row, dataset=self.data.name
                    )
                self._save_last(epoch + 1, history, best)
                self.log(_summary(row, cfg.epochs))
                if "mAP" in row or "val_mAP" in row or epoch + 1 == end:
                    self._plot()
            if self.distributed:
                dist.barrier()
        return TrainResult(self.run_dir, history, best)

    def _plot(self) -> None:
        """Loss, learning rate, rank-1 and mAP curves beside the metrics log."""
        from .viz import plot_training_curves

        try:
            plot_training_curves(self.run_dir / "metrics.jsonl", self.run_dir / "curves.png")
        except (OSError, ValueError) as exc:  # a picture is never worth a failed run
            self.log(f"could not draw training curves: {exc}")


def _summary(row: dict[str, Any], epochs: int) -> str:
    text = (
        f"epoch {row['epoch']}/{epochs}  loss {row['loss']:.4f}  lr {row['lr']:.1e}  "
        f"{row['images_per_s']:.0f} img/s  {row['seconds']:.1f}s"
    )
    if "val_mAP" in row:
        text += f"  validation: rank-1 {row['val_rank1']:.2%}  mAP {row['val_mAP']:.2%}"
    if "mAP" in row:
        text += f"  test: rank-1 {row['rank1']:.2%}  mAP {row['mAP']:.2%}"
    return text
