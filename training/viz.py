"""Figures for looking at a model: SONA attention (the paper's figure 3), rank lists, curves.

Numbers say how well a model ranks; figures say why it fails. ``sona viz attention`` shows
where a SONA block looks from a few reference positions, ``sona viz ranks`` shows what the
model retrieves for some queries under the evaluation protocol, and ``sona viz curves`` shows
how a training run went. Matplotlib is imported inside the functions (and always renders
through Agg, never a window), so the ``sona`` command line stays fast without it.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from matplotlib.figure import Figure

    from model import SONANet

    from .datasets import ReIDDataset

__all__ = [
    "AttentionMap",
    "attention_figure",
    "attention_map",
    "default_reference_points",
    "plot_training_curves",
    "rank_figure",
    "rank_list_figure",
    "ranked_gallery",
    "top_related",
]

_GREEN = "#1a9e3a"
_RED = "#d62728"
# Default reference points as fractions of the feature map (row, column) and their names.
_BODY_POINTS = (("head", 0.12, 0.5), ("torso", 0.4, 0.5), ("legs", 0.75, 0.5))


# --------------------------------------------------------------------------------------------
# Attention (figure 3)


@dataclass(frozen=True)
class AttentionMap:
    """One image's attention at one SONA block.

    ``crop`` is the ``uint8 [3, H, W]`` network input (before normalisation), ``attention`` the
    row-stochastic ``[hw, hw]`` map (row = reference position, flattened row-major over the
    ``grid`` = (h, w) feature map), ``image_size`` the (height, width) of the file as read.
    """

    crop: torch.Tensor
    attention: torch.Tensor
    grid: tuple[int, int]
    stage: int
    image_size: tuple[int, int]


class _Captured(Exception):
    """Raised by the hook once the SONA input is in hand: nothing after it needs computing."""


def _sona_stages(net: SONANet) -> list[int]:
    from model import SONA

    return [s for s in (2, 3, 4) if isinstance(getattr(net, f"sona{s}", None), SONA)]


def attention_map(
    net: SONANet, image_path: str | Path, *, stage: int | None = None
) -> AttentionMap:
    """Run ``image_path`` through ``net`` up to a SONA block and return that block's attention.

    ``stage`` picks the block (2 or 3; default the first present). The block's input is taken
    with a forward pre-hook and passed to ``SONA.attention``, so the map is exactly the one the
    block applies. Raises ``ValueError`` when the network has no SONA block, or not at ``stage``.
    """
    import torch

    from model.preprocess import load_image, normalize, resize

    present = _sona_stages(net)
    if not present:
        raise ValueError(
            "this checkpoint has no SONA block (sona_stages is empty), so there is no attention "
            "map to show; use a SONA2, SONA3 or SONA2+3 model"
        )
    if stage is None:
        stage = present[0]
    if stage not in present:
        raise ValueError(
            f"this checkpoint has no SONA block after stage {stage}; it has one after stage(s) "
            f"{', '.join(map(str, present))}"
        )
    image = load_image(image_path)
    crop = resize(image, tuple(net.config.input_size))
    device = next(net.parameters()).device
    module = getattr(net, f"sona{stage}")
    captured: list[torch.Tensor] = []

    def hook(_module: Any, inputs: tuple[torch.Tensor, ...]) -> None:
        captured.append(inputs[0])
        raise _Captured

    was_training = net.training
    net.eval()
    handle = module.register_forward_pre_hook(hook)
    try:
        with torch.inference_mode():
            with contextlib.suppress(_Captured):
                net.backbone(normalize(crop.unsqueeze(0).to(device)))
            if not captured:
                raise RuntimeError(f"SONA block after stage {stage} was never reached")
            features = captured[0]
            attention = module.attention(features)[0].float().cpu()
    finally:
        handle.remove()
        net.train(was_training)
    h, w = features.shape[-2:]
    return AttentionMap(crop, attention, (int(h), int(w)), stage, tuple(image.shape[-2:]))


def top_related(attention_row: torch.Tensor, width: int, top: int) -> list[tuple[int, int]]:
    """The ``top`` positions (row, col) with the largest weights in one attention row, best first.

    Ties keep the lower flattened index first (a stable sort), so the choice is reproducible.
    """
    import torch

    k = max(0, min(int(top), attention_row.numel()))
    order = torch.sort(attention_row.flatten(), descending=True, stable=True).indices[:k]
    return [(int(i) // width, int(i) % width) for i in order]


def default_reference_points(grid: tuple[int, int]) -> list[tuple[str, tuple[int, int]]]:
    """Head, torso and legs on the crop's vertical axis, and the top-left background corner.

    Re-ID crops are centred on the person, so fixed fractions of the map land on the body
    in most crops; the corner is the paper's background reference.
    """
    h, w = grid
    points = [(name, (min(h - 1, int(fr * h)), int(fc * (w - 1)))) for name, fr, fc in _BODY_POINTS]
    points.append(("background", (0, 0)))
    return points


def _pixel_points_to_cells(
    points: Sequence[tuple[float, float]], image_size: tuple[int, int], grid: tuple[int, int]
) -> list[tuple[str, tuple[int, int]]]:
    height, width = image_size
    h, w = grid
    out = []
    for row, col in points:
        if not (0 <= row < height and 0 <= col < width):
            raise ValueError(
                f"reference point {row:g},{col:g} is outside the image ({height} x {width} "
                "pixels; points are row,col)"
            )
        cell = (min(h - 1, int(row * h / height)), min(w - 1, int(col * w / width)))
        out.append((f"({row:g}, {col:g}) px", cell))
    return out


def _upscaled(crop: torch.Tensor, min_height: int = 256) -> np.ndarray:
    """The crop as ``[H, W, 3]`` uint8, enlarged by an integer factor to at least min_height."""
    from PIL import Image

    array = crop.permute(1, 2, 0).numpy()
    factor = max(1, math.ceil(min_height / array.shape[0]))
    if factor == 1:
        return array
    image = Image.fromarray(array).resize(
        (array.shape[1] * factor, array.shape[0] * factor), Image.Resampling.BILINEAR
    )
    return np.asarray(image)


def _heat(values: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """An ``[h*w]`` map upsampled bilinearly to ``size`` (height, width) and scaled to [0, 1]."""
    import torch.nn.functional as F

    grid_map = values.reshape(1, 1, *grid).float()
    up = F.interpolate(grid_map, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    low, high = float(up.min()), float(up.max())
    return (up - low) / (high - low) if high > low else np.zeros_like(up)


def _new_figure(width: float, height: float, **kwargs: Any) -> Figure:
    """A figure rendered by Agg and owned by nobody: no pyplot state, no display needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), **kwargs)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, output_png: str | Path, dpi: int = 110) -> Path:
    path = Path(output_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi, facecolor="white")
    return path


def attention_figure(
    net: SONANet,
    image_path: str | Path,
    output_png: str | Path,
    *,
    points: Sequence[tuple[float, float]] | None = None,
    stage: int | None = None,
    top: int = 10,
) -> Path:
    """Draw the paper's figure 3 for one crop: where a SONA block looks from reference points.

    One panel per reference point: the crop (upscaled, with that point's attention row as a
    faint heatmap), the point in green and its ``top`` most related positions in red. A last
    panel overlays the average attention each position receives. ``points`` are (row, col) in
    pixels of the image file; by default head, torso, legs and a background corner.
    """
    from matplotlib import cm

    amap = attention_map(net, image_path, stage=stage)
    h, w = amap.grid
    if points:
        refs = _pixel_points_to_cells(points, amap.image_size, amap.grid)
    else:
        refs = default_reference_points(amap.grid)
    picture = _upscaled(amap.crop)
    ph, pw = picture.shape[:2]
    sy, sx = ph / h, pw / w

    def centre(cell: tuple[int, int]) -> tuple[float, float]:
        return (cell[1] + 0.5) * sx - 0.5, (cell[0] + 0.5) * sy - 0.5  # x, y in picture pixels

    panels = len(refs) + 1
    wide = panels >= 4  # a narrow figure gets the title on three lines
    figure = _new_figure(max(4.4, 1.55 * panels + 0.6), 4.3 if wide else 4.6, layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    dot = max(18.0, min(60.0, 1400.0 / max(h, w * 2)))
    for ax, (name, cell) in zip(axes, refs, strict=False):
        row = amap.attention[cell[0] * w + cell[1]]
        ax.imshow(picture)
        ax.imshow(_heat(row, amap.grid, (ph, pw)), cmap="jet", alpha=0.35, vmin=0, vmax=1)
        related = top_related(row, w, top)
        if related:
            xs, ys = zip(*(centre(c) for c in related), strict=True)
            ax.scatter(xs, ys, s=dot, c=_RED, edgecolors="white", linewidths=0.6, zorder=3)
        x, y = centre(cell)
        ax.scatter([x], [y], s=dot * 1.8, c=_GREEN, edgecolors="white", linewidths=1.0, zorder=4)
        ax.set_title(f"{name}\ncell ({cell[0]}, {cell[1]})", fontsize=9)
        ax.set_axis_off()
    mean = amap.attention.mean(dim=0)  # attention each position receives, averaged over rows
    ax = axes[-1]
    ax.imshow(picture)
    ax.imshow(_heat(mean, amap.grid, (ph, pw)), cmap="jet", alpha=0.5, vmin=0, vmax=1)
    ax.set_title("mean attention\nreceived", fontsize=9)
    ax.set_axis_off()
    colorbar = figure.colorbar(
        cm.ScalarMappable(cmap="jet"), ax=ax, fraction=0.08, pad=0.03, ticks=[0, 1]
    )
    colorbar.ax.set_yticklabels(["low", "high"], fontsize=8)
    figure.suptitle(
        f"SONA attention after stage {amap.stage} ({h} x {w} map)"
        + (": " if wide else "\n")
        + f"green = reference, red = top {min(top, h * w)} related\n{Path(image_path).name}",
        fontsize=10,
    )
    return _save(figure, output_png)


# --------------------------------------------------------------------------------------------
# Rank lists


def ranked_gallery(
    distances: Any,
    q_pid: int,
    q_camid: int,
    g_pids: Any,
    g_camids: Any,
    top: int = 10,
) -> tuple[np.ndarray, np.ndarray]:
    """One query's first ``top`` gallery indices and whether each is correct (Market protocol).

    The gallery is sorted by ascending distance (stable, as ``evaluate`` does); items with the
    query's identity *and* camera are junk and skipped; an item is correct when it shows the
    query's identity (necessarily from another camera, once junk is gone).
    """
    d = np.asarray(distances).reshape(-1)
    g_pids = np.asarray(g_pids).reshape(-1)
    g_camids = np.asarray(g_camids).reshape(-1)
    order = np.argsort(d, kind="stable")
    junk = (g_pids[order] == q_pid) & (g_camids[order] == q_camid)
    kept = order[~junk][: max(0, int(top))]
    return kept, g_pids[kept] == q_pid


def _thumbnail(path: str | Path, height: int = 128, width: int = 64) -> np.ndarray:
    from PIL import Image

    from model.preprocess import load_image

    array = load_image(path).permute(1, 2, 0).numpy()
    return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR))


def rank_figure(
    query_paths: Sequence[str | Path],
    gallery_paths: Sequence[str | Path],
    ranked_indices: Sequence[Sequence[int]],
    correct: Sequence[Sequence[bool]],
    output_png: str | Path,
    *,
    top: int = 10,
    query_labels: Sequence[str] | None = None,
    item_labels: Sequence[Sequence[str]] | None = None,
    title: str | None = None,
) -> Path:
    """Draw rank lists: per row a query crop, then its first ``top`` gallery crops.

    ``ranked_indices[i]`` indexes ``gallery_paths`` in rank order (junk already removed, see
    ``ranked_gallery``); ``correct[i]`` frames each item green (right person) or red (wrong).
    Optional labels go under the query and under each item.
    """
    rows = len(query_paths)
    if rows == 0:
        raise ValueError("no queries to draw")
    if len(ranked_indices) != rows or len(correct) != rows:
        raise ValueError(
            f"{rows} queries but {len(ranked_indices)} rank lists and {len(correct)} "
            "correctness lists"
        )
    top = max(1, int(top))
    # Column 1 is a narrow spacer that sets the query apart from its rank list.
    figure = _new_figure(0.95 * (top + 1) + 0.45, 2.05 * rows + 0.7, layout="constrained")
    axes = figure.subplots(
        rows, top + 2, squeeze=False, gridspec_kw={"width_ratios": [1, 0.12] + [1] * top}
    )
    for r in range(rows):
        ax = axes[r, 0]
        ax.imshow(_thumbnail(query_paths[r]))
        _frame(ax, "#333333", 2.0)
        label = query_labels[r] if query_labels else "query"
        ax.set_xlabel(label, fontsize=8, fontweight="bold")
        axes[r, 1].set_axis_off()
        items = list(ranked_indices[r])[:top]
        marks = list(correct[r])[:top]
        if len(marks) != len(items):
            raise ValueError(f"row {r}: {len(items)} gallery items but {len(marks)} marks")
        for k in range(top):
            ax = axes[r, k + 2]
            if k >= len(items):
                ax.set_axis_off()
                continue
            ax.imshow(_thumbnail(gallery_paths[int(items[k])]))
            _frame(ax, _GREEN if marks[k] else _RED, 3.5)
            ax.set_xlabel(item_labels[r][k] if item_labels else f"#{k + 1}", fontsize=7)
    figure.suptitle(
        title or "Rank lists: green frame = same person (other camera), red = another person",
        fontsize=10,
    )
    return _save(figure, output_png, dpi=100)


def _frame(ax: Any, color: str, width: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color(color)
        spine.set_linewidth(width)


def _choose_queries(first_correct: np.ndarray, valid: np.ndarray, count: int, seed: int) -> list:
    """Up to ``count`` valid queries, half rank-1 successes and half failures where possible."""
    rng = np.random.default_rng(seed)
    hits = rng.permutation(np.flatnonzero(valid & first_correct))
    misses = rng.permutation(np.flatnonzero(valid & ~first_correct))
    n_miss = min(len(misses), count // 2)
    n_hit = min(len(hits), count - n_miss)
    n_miss = min(len(misses), count - n_hit)
    return sorted(hits[:n_hit].tolist()) + sorted(misses[:n_miss].tolist())


def rank_list_figure(
    net: SONANet,
    dataset: ReIDDataset,
    output_png: str | Path,
    *,
    queries: int = 8,
    top: int = 10,
    seed: int = 0,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    workers: int = 2,
) -> Path:
    """Evaluate ``net`` on ``dataset``'s query/gallery split and draw some queries' rank lists.

    Embeddings and cosine distances are those of ``sona eval``. Queries are drawn with ``seed``
    among those with a valid match, half rank-1 successes and half failures where both exist
    (successes first), so the figure shows what works and what does not.
    """
    import torch

    from .data import ImageDataset
    from .datasets import require_evaluable
    from .evaluation import cosine_distance
    from .features import extract_features

    require_evaluable(dataset)
    if queries < 1 or top < 1:
        raise ValueError(f"queries and top must be >= 1, got {queries} and {top}")
    device = torch.device(device) if device is not None else next(net.parameters()).device
    size = tuple(net.config.input_size)
    preload = len(dataset.query) + len(dataset.gallery) <= 5000  # decode once when small
    q_set = ImageDataset(dataset.query, size, preload=preload)
    g_set = ImageDataset(dataset.gallery, size, preload=preload)
    q = extract_features(net, q_set, device, batch_size=batch_size, workers=workers)
    g = extract_features(net, g_set, device, batch_size=batch_size, workers=workers)
    distances = cosine_distance(q, g)
    q_pids, q_cams = q_set.pids.numpy(), q_set.camids.numpy()
    g_pids, g_cams = g_set.pids.numpy(), g_set.camids.numpy()

    same = q_pids[:, None] == g_pids[None, :]
    junk = same & (q_cams[:, None] == g_cams[None, :])
    valid = (same & ~junk).any(axis=1)
    masked = np.where(junk, np.inf, distances)
    first_correct = same[np.arange(len(q_pids)), masked.argmin(axis=1)] & valid
    chosen = _choose_queries(first_correct, valid, queries, seed)

    ranked, marks, item_labels, query_labels = [], [], [], []
    for i in chosen:
        idx, ok = ranked_gallery(distances[i], q_pids[i], q_cams[i], g_pids, g_cams, top)
        ranked.append(idx)
        marks.append(ok)
        item_labels.append(
            [
                f"#{k + 1} id {g_pids[j]} c{g_cams[j] + 1}\nd={distances[i, j]:.3f}"
                for k, j in enumerate(idx)
            ]
        )
        outcome = "rank-1 hit" if first_correct[i] else "rank-1 miss"
        query_labels.append(f"id {q_pids[i]} cam {q_cams[i] + 1}\n{outcome}")
    title = (
        f"{dataset.name}: top-{top} of {len(chosen)} queries ({int(first_correct[chosen].sum())} "
        f"rank-1 hits); green = same person from another camera, red = another person;\n"
        f"same person + same camera is skipped (Market protocol); d = cosine distance"
    )
    return rank_figure(
        [dataset.query[i].path for i in chosen],
        [r.path for r in dataset.gallery],
        ranked,
        marks,
        output_png,
        top=top,
        query_labels=query_labels,
        item_labels=item_labels,
        title=title,
    )


# --------------------------------------------------------------------------------------------
# Training curves


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    """Rows of metrics.jsonl by epoch; a repeated epoch (a resumed run) keeps its last row."""
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file at {path}")
    by_epoch: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            by_epoch[int(row["epoch"])] = row
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a metrics row ({exc})") from None
    if not by_epoch:
        raise ValueError(f"{path} holds no epochs yet")
    return [by_epoch[e] for e in sorted(by_epoch)]


def plot_training_curves(metrics_jsonl: str | Path, output_png: str | Path) -> Path:
    """Plot a run's losses, learning rate and (where evaluated) rank-1 and mAP against epoch.

    ``metrics_jsonl`` is the trainer's ``metrics.jsonl`` or the run folder holding it. Without
    evaluation rows the figure has the loss and learning-rate panels only.
    """
    from matplotlib.ticker import MaxNLocator

    source = Path(metrics_jsonl)
    rows = _read_metrics(source)
    # The validation split's curve when the run had one (the test set is scored only at the end)
    prefix = "val_" if any("val_mAP" in r for r in rows) else ""
    split = "validation" if prefix else "evaluation"
    evals = [r for r in rows if f"{prefix}rank1" in r and f"{prefix}mAP" in r]
    panels = 3 if evals else 2
    figure = _new_figure(4.6 * panels, 3.6, layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    style = {"marker": "o", "markersize": 3} if len(rows) <= 40 else {}

    def series(key: str, data: list[dict[str, Any]]) -> tuple[list[int], list[float]]:
        kept = [r for r in data if isinstance(r.get(key), int | float)]
        return [r["epoch"] for r in kept], [float(r[key]) for r in kept]

    ax = axes[0]
    for key, label, color in (
        ("loss", "total", "black"),
        ("triplet", "triplet", "tab:blue"),
        ("cross_entropy", "cross-entropy", "tab:orange"),
    ):
        xs, ys = series(key, rows)
        if xs:
            ax.plot(xs, ys, label=label, color=color, **style)
    ax.set_title("training loss (epoch mean)", fontsize=11)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[1]
    xs, ys = series("lr", rows)
    positive = [(x, y) for x, y in zip(xs, ys, strict=True) if y > 0]
    if positive:
        ax.plot(*zip(*positive, strict=True), color="tab:green", **style)
        ax.set_yscale("log")
    ax.set_title("learning rate", fontsize=11)
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate (log scale)")
    ax.grid(alpha=0.3, which="both")

    if evals:
        ax = axes[2]
        for key, label, color in (("rank1", "rank-1", "tab:red"), ("mAP", "mAP", "tab:purple")):
            xs, ys = series(prefix + key, evals)
            ax.plot(xs, [100 * y for y in ys], label=label, color=color, marker="o", markersize=4)
        best = max(evals, key=lambda r: r[f"{prefix}mAP"])
        ax.axvline(best["epoch"], color="grey", linestyle=":", linewidth=1)
        ax.set_title(
            f"{split} (best mAP {100 * best[f'{prefix}mAP']:.1f}%, epoch {best['epoch']})",
            fontsize=11,
        )
        ax.set_xlabel("epoch")
        ax.set_ylabel("percent")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    for ax in axes:
        ax.set_xlim(left=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if source.is_dir() or source.name == "metrics.jsonl":
        run = source if source.is_dir() else source.parent
        name = run.resolve().name
    else:
        name = source.name
    figure.suptitle(f"training run {name}: {len(rows)} epochs", fontsize=11)
    return _save(figure, output_png)
