"""The ``sona`` command line: one entry point, a subcommand per job.

Each subcommand imports what it needs when it runs, so ``sona --help`` stays instant and
``sona info`` never loads the service.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def _input_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH such as 384x128, got {text!r}"
        ) from None
    return height, width


def _stages(text: str) -> tuple[int, ...]:
    if text.lower() in ("", "none"):
        return ()
    try:
        return tuple(int(v) for v in text.replace("+", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected stages such as 2,3 or none, got {text!r}"
        ) from None


def _model_config(args: argparse.Namespace):
    """The configuration named by --checkpoint or --preset, with any explicit overrides."""
    from model import PRESETS, SONANetConfig
    from model.checkpoint import read_checkpoint

    if args.checkpoint:
        config = SONANetConfig.from_dict(read_checkpoint(args.checkpoint)["config"])
    else:
        config = PRESETS[args.preset]
    overrides = {
        "depth": args.depth,
        "sona_stages": args.sona_stages,
        "input_size": args.input,
        "num_classes": args.num_classes,
    }
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})


def _stage_label(stages: tuple[int, ...]) -> str:
    return "+".join(map(str, stages)) if stages else "none"


def _cmd_info(args: argparse.Namespace) -> int:
    from model.info import baseline_resnet50_info, describe

    config = _model_config(args)
    rows = []
    if args.variants:
        for stages in ((), (2,), (3,), (2, 3)):
            variant = dataclasses.replace(config, sona_stages=stages)
            name = f"SONA{_stage_label(stages)}-Net" if stages else "BL+DB* (no SONA)"
            rows.append(describe(variant, name))
    else:
        rows.append(describe(config, f"SONA{_stage_label(config.sona_stages)}-Net"))
    if args.baseline:
        rows.append(baseline_resnet50_info(num_classes=config.num_classes or 751))

    if args.json:
        out = [dataclasses.asdict(r) | {"macs_per_embedding": r.macs_per_embedding} for r in rows]
        print(json.dumps(out, indent=2))
        return 0

    head = rows[0]
    print(
        f"depth {config.depth}, SONA after stage(s) {_stage_label(config.sona_stages)}, "
        f"input {config.input_size[0]}x{config.input_size[1]}, {config.num_classes} classes, "
        f"{config.embedding_dim}-d embedding"
    )
    print(f"{'model':<22} {'input':>8} {'params':>9} {'infer.':>9} {'GMACs':>7} {'GMACs/emb':>10}")
    for r in rows:
        print(
            f"{r.name:<22} {r.input_size[0]:>4}x{r.input_size[1]:<3} {r.params / 1e6:>8.2f}M "
            f"{r.params_inference / 1e6:>8.2f}M {r.macs / 1e9:>7.2f} "
            f"{r.macs_per_embedding / 1e9:>10.2f}"
        )
    print("(infer.: parameters without the identity classifiers; GMACs: one image, one pass;")
    print(" GMACs/emb: a flip-averaged embedding, image and mirror)")
    print(f"feature maps of {head.name} (channels x height x width):")
    for stage, shape in head.feature_maps.items():
        print(f"  {stage:<7} {' x '.join(map(str, shape))}")
    return 0


def _batch(text: str) -> tuple[int, int]:
    try:
        p, k = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PxK such as 32x4, got {text!r}") from None
    return p, k


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import TRAIN_PRESETS
    from .datasets import load_dataset
    from .trainer import Trainer

    config = TRAIN_PRESETS[args.preset]
    model = dataclasses.replace(
        config.model,
        **{
            k: v
            for k, v in {
                "depth": args.depth,
                "sona_stages": args.sona_stages,
                "input_size": args.input,
                "backbone_weights": args.backbone_weights,
            }.items()
            if v is not None
        },
    )
    overrides = {
        "epochs": args.epochs,
        "base_lr": args.lr,
        "eval_every": args.eval_every,
        "seed": args.seed,
        "triplet_margin": args.triplet_margin,
    }
    if args.batch:
        overrides["ids_per_batch"], overrides["images_per_id"] = args.batch
    if args.no_amp:
        overrides["amp"] = False
    config = dataclasses.replace(
        config, model=model, **{k: v for k, v in overrides.items() if v is not None}
    )
    data = load_dataset(args.dataset, args.data)
    trainer = Trainer(
        config,
        data,
        args.output,
        device=args.device,
        workers=args.workers,
        preload=not args.no_preload,
        progress=not args.quiet,
        stop_after=args.stop_after,
    )
    if trainer.is_main:
        print(data.summary())
    result = trainer.fit(resume=not args.no_resume)
    if trainer.is_main and result.best:
        best = result.best
        print(
            f"best: epoch {best['epoch']}  rank-1 {best['rank1']:.2%}  mAP {best['mAP']:.2%}  "
            f"-> {result.run_dir / 'best.pt'}"
        )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import numpy as np

    from model import load_checkpoint

    from .data import ImageDataset
    from .datasets import load_dataset, require_evaluable
    from .features import evaluate_net
    from .trainer import resolve_device

    data = require_evaluable(load_dataset(args.dataset, args.data))
    device = resolve_device(args.device)
    images: dict[tuple[int, int], tuple[ImageDataset, ImageDataset]] = {}
    rows = []
    columns = ("mAP", "rank1", "rank5", "rank10", "mINP")
    print(f"{'checkpoint':<40} {'mAP':>7} {'R-1':>7} {'R-5':>7} {'R-10':>7} {'mINP':>7}")
    for path in args.checkpoints:
        net, _ = load_checkpoint(path, device)
        size = net.config.input_size
        if size not in images:
            preload = not args.no_preload
            images[size] = (
                ImageDataset(data.query, size, preload=preload),
                ImageDataset(data.gallery, size, preload=preload),
            )
        query, gallery = images[size]
        metrics = evaluate_net(
            net,
            data,
            device,
            query=query,
            gallery=gallery,
            rerank=args.rerank,
            batch_size=args.batch_size,
            workers=args.workers,
        )
        row = [getattr(metrics, c) * 100 for c in columns]
        rows.append(row)
        print(f"{str(path)[-40:]:<40} " + " ".join(f"{v:>7.2f}" for v in row))
    if len(rows) > 1:
        table = np.array(rows)
        print(
            f"{'mean (' + str(len(rows)) + ' runs)':<40} "
            + " ".join(f"{v:>7.2f}" for v in table.mean(0))
        )
        print(f"{'std':<40} " + " ".join(f"{v:>7.2f}" for v in table.std(0, ddof=1)))
    print(
        f"({data.name}: {len(data.query)} queries, {len(data.gallery)} gallery images"
        + (", k-reciprocal re-ranking" if args.rerank else "")
        + ")"
    )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from model.checkpoint import read_checkpoint
    from service.app import create_app
    from service.runtime import StartupError, check_onnx_model
    from service.settings import Settings

    overrides = {
        k: v
        for k, v in {
            "checkpoint": args.checkpoint,
            "data_dir": args.data_dir,
            "device": args.device,
        }.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"SONA_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"invalid settings: {problems}") from None
    demo = None
    if settings.checkpoint is None:
        from .demo import build_demo

        print("no SONA_CHECKPOINT: serving the DEMO (a tiny model trained on synthetic data)")
        demo = build_demo(
            settings.data_dir / "demo", identities=args.demo_identities, epochs=args.demo_epochs
        )
        settings = settings.model_copy(update={"checkpoint": demo.checkpoint})
    read_checkpoint(settings.checkpoint)  # a bad file stops here with one line, not a traceback
    try:
        check_onnx_model(settings)
    except StartupError as exc:
        raise ValueError(str(exc)) from None
    if demo is not None:
        import threading

        threading.Thread(target=_index_demo, args=(demo, args, settings), daemon=True).start()
    uvicorn.run(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    return 0


def _index_demo(demo, args: argparse.Namespace, settings) -> None:
    """Once the server is ready, index the synthetic gallery through POST /gallery (once)."""
    import time
    from datetime import UTC, datetime

    import httpx

    from service.client import crops_from_folder, upload

    host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{host}:{args.port}"
    key = settings.keys[0].decode() if settings.keys else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    else:
        return
    counts = httpx.get(f"{url}/gallery", headers=headers, timeout=30).json()
    if not any(g["gallery"] == "default" for g in counts.get("galleries", [])):
        crops = crops_from_folder(
            demo.gallery_folder, start=datetime(2024, 1, 1, tzinfo=UTC), with_identity=True
        )
        added, errors = upload(crops, url, api_key=key, progress=False)
        print(
            f"demo: indexed {added} synthetic gallery crops into gallery 'default'"
            + (f" ({len(errors)} batches failed: {errors[0]})" if errors else "")
        )
    print(
        f"\nSONA DEMO ready at {url}  (tiny model trained on synthetic data: a demo, not a "
        f"real re-ID model)\n  API docs: {url}/docs\n  try:     curl -F "
        f"image=@{demo.example_query()} '{url}/search?k=5&group_by=identity'\n",
        flush=True,
    )


def _cmd_gallery_add(args: argparse.Namespace) -> int:
    from datetime import datetime
    from pathlib import Path

    from service.client import crops_from_csv, crops_from_folder, upload

    if bool(args.folder) == bool(args.csv):
        raise ValueError("give a FOLDER of Market-style crops or --csv FILE (one of them)")
    if args.csv:
        crops = crops_from_csv(Path(args.csv))
    else:
        start = datetime.fromisoformat(args.start)
        if start.tzinfo is None:
            raise ValueError("--start needs a UTC offset, e.g. 2024-01-01T00:00:00+00:00")
        crops = crops_from_folder(
            Path(args.folder), start=start, fps=args.fps, with_identity=args.with_identity
        )
    if not crops:
        raise ValueError("no crops found")
    added, errors = upload(
        crops, args.url, gallery=args.gallery, api_key=args.api_key, batch_size=args.batch_size
    )
    print(f"added {added} of {len(crops)} crops to gallery '{args.gallery}' at {args.url}")
    for error in errors[:10]:
        print(f"  failed: {error}", file=sys.stderr)
    return 0 if not errors else 1


def _add_store_options(parser: argparse.ArgumentParser) -> None:
    """Which store to open; unset options fall back to the SONA_* variables the service reads."""
    parser.add_argument("--data-dir", help="gallery data folder (SONA_DATA_DIR, default ./data)")
    parser.add_argument("--store", choices=["faiss", "milvus"], help="backend (SONA_STORE)")
    parser.add_argument(
        "--milvus-uri", help="http://host:19530 or a Milvus Lite .db file (SONA_MILVUS_URI)"
    )
    parser.add_argument(
        "--collection-prefix", help="Milvus collection prefix (SONA_MILVUS_COLLECTION_PREFIX)"
    )
    parser.add_argument("--crops-dir", help="Milvus crop folder (SONA_CROPS_DIR)")
    # the Milvus token comes from SONA_MILVUS_TOKEN only: not on a command line others can see


def _open_gallery_store(args: argparse.Namespace, dim: int):
    """The store named by the options, for export/import: one line on failure, no traceback."""
    from service.runtime import StartupError, open_store
    from service.settings import Settings

    given = {
        "data_dir": args.data_dir,
        "store": args.store,
        "milvus_uri": args.milvus_uri,
        "milvus_collection_prefix": args.collection_prefix,
        "crops_dir": args.crops_dir,
    }
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    try:
        return open_store(settings, dim)
    except StartupError as exc:
        hint = ""
        if "another store" in str(exc) or "another process" in str(exc):
            hint = (
                " (a running service holds it: stop it first; export and import work on the "
                "store directly, offline)"
            )
        raise ValueError(f"{exc}{hint}") from exc


def _cmd_gallery_export(args: argparse.Namespace) -> int:
    from service.transfer import export_gallery

    store = _open_gallery_store(args, args.dim)
    try:
        result = export_gallery(store, args.gallery, args.output)
    except RuntimeError as exc:  # StoreError, or Milvus failing: one line, no traceback
        raise ValueError(str(exc)) from exc
    finally:
        store.close()
    print(
        f"exported {result.count} items of gallery '{result.gallery}' ({result.dim}-d) "
        f"to {result.path}"
    )
    return 0


def _cmd_gallery_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from service.store import StoreError
    from service.transfer import import_gallery, read_manifest

    try:
        manifest = read_manifest(args.input)
    except StoreError as exc:
        raise ValueError(str(exc)) from exc
    store = _open_gallery_store(args, manifest["dim"])
    try:
        result = import_gallery(store, args.input, args.gallery)
    except RuntimeError as exc:  # StoreError, or Milvus failing: one line, no traceback
        raise ValueError(str(exc)) from exc
    finally:
        store.close()
    print(
        f"imported {result.added} items into gallery '{result.gallery}'"
        + (f" ({result.skipped} already there)" if result.skipped else "")
    )
    if result.id_map:
        if args.id_map:
            Path(args.id_map).write_text(json.dumps(result.id_map, indent=1) + "\n")
            print(f"this store gives new item ids: old -> new written to {args.id_map}")
        else:
            print(
                f"this store gives new item ids: {len(result.id_map)} ids changed "
                "(use --id-map PATH to keep the mapping)",
                file=sys.stderr,
            )
    return 0


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    from .datasets import DATASET_NAMES

    parser.add_argument(
        "--dataset", required=True, choices=DATASET_NAMES, help="dataset layout under --data"
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="ROOT",
        help="dataset folder (for custom: a folder per identity, or a CSV file)",
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="data-loading processes when images are not preloaded (default 2)",
    )
    parser.add_argument(
        "--no-preload",
        action="store_true",
        help="decode images per batch instead of once into memory "
        "(for datasets larger than memory)",
    )


def _add_architecture_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--depth", type=int, choices=[18, 34, 50], help="ResNet depth")
    parser.add_argument(
        "--sona-stages",
        type=_stages,
        metavar="STAGES",
        help="where SONA is injected: 2, 3, 2,3 or none",
    )
    parser.add_argument("--input", type=_input_size, metavar="HxW", help="input size, e.g. 384x128")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        choices=["paper", "tiny"],
        default="paper",
        help="named configuration to start from (default: paper)",
    )
    parser.add_argument(
        "--checkpoint",
        metavar="PATH",
        help="take the configuration from this checkpoint instead of a preset",
    )
    _add_architecture_options(parser)
    parser.add_argument(
        "--num-classes",
        type=int,
        metavar="N",
        help="training identities (classifier width; 0 for none)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sona",
        description="SONA-Net person re-identification: model, training, gallery search.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = sub.add_parser(
        "info",
        help="parameters, multiply-adds and feature-map sizes of a model configuration",
        description="Print a configuration's parameter count, multiply-adds at its input size "
        "and the feature-map size after each stage.",
    )
    _add_model_options(info)
    info.add_argument(
        "--variants",
        action="store_true",
        help="compare the four variants of the paper's table 5 (no SONA, 2, 3, 2+3)",
    )
    info.add_argument(
        "--baseline",
        action="store_true",
        help="add the plain ResNet-50 re-ID baseline at 256x128 for comparison",
    )
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(handler=_cmd_info)

    from .export_cmd import add_export_parser
    from .synthetic import add_synth_parser
    from .viz import add_viz_parser

    add_synth_parser(sub)
    add_viz_parser(sub)
    add_export_parser(sub)

    train = sub.add_parser(
        "train",
        help="train SONA-Net (resumes when OUTPUT holds an unfinished run)",
        description="Train SONA-Net with the paper's recipe (or the tiny preset). Writes "
        "last.pt (resumable), best.pt, metrics.jsonl and config.json into --output. Run under "
        "torchrun for several GPUs: torchrun --nproc-per-node N -m training.cli train ...",
    )
    _add_data_options(train)
    train.add_argument("--output", required=True, metavar="DIR", help="run folder")
    train.add_argument(
        "--preset",
        choices=["paper", "tiny"],
        default="paper",
        help="paper: ResNet-50 at 384x128, 400 epochs; tiny: ResNet-18 for CPUs",
    )
    train.add_argument("--epochs", type=int, help="total epochs (schedule milestones unchanged)")
    train.add_argument(
        "--batch",
        type=_batch,
        metavar="PxK",
        help="identities x images per identity per batch (paper: 32x4)",
    )
    train.add_argument("--lr", type=float, help="peak learning rate after warm-up (paper: 1e-3)")
    train.add_argument(
        "--triplet-margin",
        type=float,
        metavar="M",
        help="hinge triplet loss with this margin (default: soft margin)",
    )
    _add_architecture_options(train)
    train.add_argument(
        "--backbone-weights",
        metavar="PATH",
        help="torchvision ResNet state dict to start from (e.g. ImageNet weights)",
    )
    train.add_argument(
        "--eval-every",
        type=int,
        metavar="N",
        help="evaluate every N epochs and at the end (0: only at the end)",
    )
    train.add_argument("--seed", type=int, help="random seed (default 0)")
    train.add_argument("--no-amp", action="store_true", help="CUDA: train in float32")
    train.add_argument(
        "--no-resume",
        action="store_true",
        help="start afresh even if --output holds a run (its files are replaced)",
    )
    train.add_argument(
        "--stop-after",
        type=int,
        metavar="N",
        help="stop after N epochs in this call; run again to resume",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=_cmd_train)

    evaluate = sub.add_parser(
        "eval",
        help="rank-1/5/10, mAP and mINP of one or more checkpoints",
        description="Evaluate checkpoints on a dataset's query/gallery split (Market-1501 "
        "protocol, flip-averaged embeddings, cosine distance). With several checkpoints (the "
        "paper reports four runs per configuration) prints mean and standard deviation.",
    )
    evaluate.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT")
    _add_data_options(evaluate)
    evaluate.add_argument(
        "--rerank", action="store_true", help="k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3)"
    )
    evaluate.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    evaluate.set_defaults(handler=_cmd_eval)

    serve = sub.add_parser(
        "serve",
        help="run the gallery-search HTTP service",
        description="Serve a checkpoint over HTTP (uvicorn). Configuration comes from SONA_* "
        "environment variables (SONA_CHECKPOINT, SONA_DEVICE, SONA_DATA_DIR, SONA_INDEX, "
        "SONA_MAX_BATCH_SIZE, SONA_MAX_WAIT_MS, SONA_API_KEYS, SONA_MAX_UPLOAD_BYTES, ...); "
        "the options below override them.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--checkpoint", help="checkpoint to serve (SONA_CHECKPOINT)")
    serve.add_argument("--data-dir", help="gallery data folder (SONA_DATA_DIR, default ./data)")
    serve.add_argument("--device", help="auto, cpu, cuda, cuda:N (SONA_DEVICE)")
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM, seconds to finish in-flight requests (default 30)",
    )
    serve.add_argument(
        "--demo-identities",
        type=int,
        default=int(os.environ.get("SONA_DEMO_IDENTITIES", "100")),
        help="demo only (no checkpoint): synthetic identities (default 100)",
    )
    serve.add_argument(
        "--demo-epochs",
        type=int,
        default=int(os.environ["SONA_DEMO_EPOCHS"]) if os.environ.get("SONA_DEMO_EPOCHS") else None,
        help="demo only: training epochs (default: the tiny preset's)",
    )
    serve.set_defaults(handler=_cmd_serve)

    gallery = sub.add_parser("gallery", help="manage a running service's galleries")
    gallery_sub = gallery.add_subparsers(dest="gallery_command", metavar="ACTION", required=True)
    gadd = gallery_sub.add_parser(
        "add",
        help="index a folder of crops through the HTTP API",
        description="Upload every crop of FOLDER to POST /gallery in batches, with camera and "
        "time from Market-1501-style names (PPPP_cC..._FFFFFF: camera C, frame F at --fps "
        "after --start) or from --csv (path,camera_id,timestamp[,identity,track_id]).",
    )
    gadd.add_argument("folder", metavar="FOLDER", nargs="?", help="folder of crops")
    gadd.add_argument("--csv", metavar="FILE", help="metadata per crop instead of file names")
    gadd.add_argument("--url", default="http://127.0.0.1:8000", help="service root URL")
    gadd.add_argument("--gallery", default="default", help="gallery name (default 'default')")
    gadd.add_argument(
        "--api-key", default=os.environ.get("SONA_API_KEY"), help="API key (default: SONA_API_KEY)"
    )
    gadd.add_argument(
        "--start",
        default="2024-01-01T00:00:00+00:00",
        help="time of frame 0 for Market-style names (ISO 8601 with offset)",
    )
    gadd.add_argument("--fps", type=float, default=25.0, help="frames per second (default 25)")
    gadd.add_argument(
        "--with-identity",
        action="store_true",
        help="also send the identity from Market-style names (labelled data)",
    )
    gadd.add_argument("--batch-size", type=int, default=16, help="crops per request")
    gadd.set_defaults(handler=_cmd_gallery_add)
    gexport = gallery_sub.add_parser(
        "export",
        help="write a gallery (vectors, metadata, crops) to one file, offline",
        description="Export a gallery straight from its store into one archive (tar: "
        "manifest.json, items.jsonl, embeddings.npy, crops/), to import it into another store "
        "without embedding the crops again. Works on the store directly: stop the service on a "
        "FAISS data dir first (the store holds a lock on it).",
    )
    _add_store_options(gexport)
    gexport.add_argument(
        "--dim", type=int, default=1536, help="embedding size of the store (default 1536)"
    )
    gexport.add_argument("--gallery", required=True, help="gallery to export")
    gexport.add_argument("--output", required=True, metavar="PATH", help="archive to write")
    gexport.set_defaults(handler=_cmd_gallery_export)
    gimport = gallery_sub.add_parser(
        "import",
        help="load a gallery archive into a store, offline, keeping item ids",
        description="Import an archive made by 'sona gallery export' into a store (for "
        "example from the embedded FAISS store into Milvus). Item ids are kept where the "
        "store can keep them (Milvus), and items already there are skipped, so an interrupted "
        "import can be run again; the FAISS store gives new ids (see --id-map).",
    )
    _add_store_options(gimport)
    gimport.add_argument("--input", required=True, metavar="PATH", help="archive to read")
    gimport.add_argument("--gallery", help="target gallery (default: the exported gallery's name)")
    gimport.add_argument(
        "--id-map", metavar="PATH", help="write old -> new item ids here when ids change (JSON)"
    )
    gimport.set_defaults(handler=_cmd_gallery_import)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print(f"sona {args.command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as exc:
        # Configuration and file errors are the user's to fix: one line, no traceback.
        print(f"sona {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
