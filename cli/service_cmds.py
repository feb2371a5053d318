"""Service commands: ``sona serve`` and ``sona gallery add|export|import``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from .errors import UserError, user_input

if TYPE_CHECKING:
    from service.settings import Settings
    from service.store import GalleryStore

__all__ = ["add_parsers"]


def _cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.app import create_app
    from service.logs import log_config
    from service.protocol import limited_protocol
    from service.runtime import StartupError, load_model, open_store

    settings = _settings(
        {"checkpoint": args.checkpoint, "data_dir": args.data_dir, "device": args.device}
    )
    _check_tls(args.ssl_certfile, args.ssl_keyfile)
    if getattr(args, "demo_only", False):  # sona demo: whatever SONA_CHECKPOINT says
        settings = settings.model_copy(update={"checkpoint": None})
    if settings.checkpoint is None:
        # the demo: the port opens at once, /readyz and the page show how far along it is;
        # its store opens first, so a data directory another service holds is still one line
        from model import PRESETS

        from .demo import preparation
        from .demo_footage import plan

        footage = plan(args, settings.data_dir)  # on a clip: its own gallery, kept with it
        where = (
            settings if footage is None else settings.model_copy(update={"data_dir": footage.store})
        )
        try:
            store = open_store(where, PRESETS["tiny"].embedding_dim)
        except StartupError as exc:
            raise UserError(str(exc)) from None
        app = create_app(settings, prepare=preparation(settings, args, store, footage))
    else:
        # the model and the store open before listening: a bad checkpoint or export, or a
        # data directory another service holds, is one line
        try:
            model = load_model(settings)
            store = open_store(settings, model.encoder.dim)
        except StartupError as exc:
            raise UserError(str(exc)) from None
        app = create_app(settings, model, store)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            log_config=log_config(args.log_level, settings.log_format),
            access_log=False,  # the service writes its own, with the request id
            timeout_graceful_shutdown=args.graceful_timeout,
            http=limited_protocol(settings.max_header_bytes, settings.header_timeout_s),
            ssl_certfile=args.ssl_certfile or None,
            ssl_keyfile=args.ssl_keyfile or None,
        )
    )
    app.state.request_stop = lambda: setattr(server, "should_exit", True)
    server.run()
    if app.state.startup_error:  # the demo could not be built: the server stopped itself
        raise UserError(app.state.startup_error)
    return 0 if server.started else 3  # 3: uvicorn's status for a failed start, as before


def _check_tls(certfile: str | None, keyfile: str | None) -> None:
    """Both files or neither, and a pair that loads: one line before the model loads."""
    if not certfile and not keyfile:
        return
    if not certfile or not keyfile:
        raise UserError("HTTPS needs both --ssl-certfile and --ssl-keyfile")
    import ssl
    from pathlib import Path

    for name in (certfile, keyfile):
        if not Path(name).is_file():
            raise UserError(f"no such certificate or key file: {name}")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (ssl.SSLError, OSError) as exc:
        raise UserError(
            f"cannot use {certfile} with {keyfile} for HTTPS: {exc.strerror or exc}"
        ) from None


def _settings(given: dict[str, Any]) -> Settings:
    """The service settings: SONA_* variables, overridden by the options that were given."""
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"SONA_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise UserError(f"invalid settings: {problems}") from None


def _cmd_gallery_add(args: argparse.Namespace) -> int:
    from datetime import datetime
    from pathlib import Path

    from client import crops_from_csv, crops_from_folder, upload

    if bool(args.folder) == bool(args.csv):
        raise UserError("give a FOLDER of Market-style crops or --csv FILE (one of them)")
    with user_input():  # a folder or CSV that does not list crops, a --start that is no time
        if args.csv:
            crops = crops_from_csv(Path(args.csv))
        else:
            start = datetime.fromisoformat(args.start)
            if start.tzinfo is None:
                raise UserError("--start needs a UTC offset, e.g. 2024-01-01T00:00:00+00:00")
            crops = crops_from_folder(
                Path(args.folder), start=start, fps=args.fps, with_identity=args.with_identity
            )
    if not crops:
        raise UserError("no crops found")
    from client import SonaClient, SonaUnreachable

    try:
        with SonaClient(args.url, retries=0, timeout=10) as probe:  # before any progress bar
            probe.healthy()
        added, errors = upload(
            crops, args.url, gallery=args.gallery, api_key=args.api_key, batch_size=args.batch_size
        )
    except SonaUnreachable as exc:  # nothing listening, a wrong host, a dropped connection
        raise UserError(str(exc)) from None
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


def _open_gallery_store(args: argparse.Namespace, dim: int) -> GalleryStore:
    """The store named by the options, for export/import: one line on failure, no traceback."""
    from service.runtime import StartupError, open_store
    from service.store import StoreLockedError

    settings = _settings(
        {
            "data_dir": args.data_dir,
            "store": args.store,
            "milvus_uri": args.milvus_uri,
            "milvus_collection_prefix": args.collection_prefix,
            "crops_dir": args.crops_dir,
        }
    )
    try:
        return open_store(settings, dim)
    except StartupError as exc:
        hint = ""
        if isinstance(exc.__cause__, StoreLockedError):
            hint = (
                " (a running service holds it: stop it first; export and import work on the "
                "store directly, offline)"
            )
        raise UserError(f"{exc}{hint}") from exc


def _cmd_gallery_export(args: argparse.Namespace) -> int:
    from service.transfer import export_gallery

    store = _open_gallery_store(args, args.dim)
    try:
        result = export_gallery(store, args.gallery, args.output)
    except RuntimeError as exc:  # StoreError, or Milvus failing: one line, no traceback
        raise UserError(str(exc)) from exc
    finally:
        store.close()
    print(
        f"exported {result.count} items of gallery '{result.gallery}' ({result.dim}-d) "
        f"to {result.path}"
    )
    return 0


def _cmd_gallery_import(args: argparse.Namespace) -> int:
    from service.store import StoreError
    from service.transfer import import_gallery, read_manifest

    try:
        manifest = read_manifest(args.input)
    except StoreError as exc:
        raise UserError(str(exc)) from exc
    store = _open_gallery_store(args, manifest["dim"])
    try:
        result = import_gallery(store, args.input, args.gallery)
    except RuntimeError as exc:  # StoreError, or Milvus failing: one line, no traceback
        raise UserError(str(exc)) from exc
    finally:
        store.close()
    print(
        f"imported {result.added} items into gallery '{result.gallery}'"
        + (f" ({result.skipped} already there)" if result.skipped else "")
    )
    if not result.sealed:
        print(
            "the store is still indexing them: searches find fewer true neighbours among them "
            "until it is done",
            file=sys.stderr,
        )
    return 0


def add_parsers(sub: Any) -> None:
    from training.options import DEMO_EPOCHS

    serve = sub.add_parser(
        "serve",
        help="run the gallery-search HTTP service",
        description="Serve a checkpoint over HTTP (uvicorn). Configuration comes from SONA_* "
        "environment variables (SONA_CHECKPOINT, SONA_DEVICE, SONA_DATA_DIR, SONA_INDEX, "
        "SONA_MAX_BATCH_SIZE, SONA_MAX_WAIT_MS, SONA_API_KEYS, SONA_MAX_UPLOAD_BYTES, ...); "
        "the options below override them.",
    )
    serve.add_argument("--checkpoint", help="checkpoint to serve (SONA_CHECKPOINT)")
    _add_serve_options(serve, "--demo-footage", DEMO_EPOCHS)
    serve.set_defaults(handler=_cmd_serve)
    demo = sub.add_parser(
        "demo",
        help="serve the demo: synthetic people, or a video's real ones with --footage",
        description="Serve the demo that `sona serve` runs without a checkpoint (SONA_CHECKPOINT "
        "is ignored): a tiny model trained on synthetic people and their gallery. With "
        "--footage VIDEO, the model is adapted to the video's own tracks without labels (as "
        "`sona adapt` does) and the gallery is the video's tracks, with their provenance; "
        "what is built is kept under DATA_DIR/demo, so a second start with the same video "
        "and settings is quick.",
    )
    _add_serve_options(demo, "--footage", DEMO_EPOCHS)
    demo.set_defaults(handler=_cmd_serve, demo_only=True, checkpoint=None)

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
    gadd.add_argument(
        "--url",
        default=os.environ.get("SONA_URL") or "http://127.0.0.1:8000",
        help="service root URL (default: SONA_URL, else http://127.0.0.1:8000, where make "
        "serve listens)",
    )
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
        "example from the embedded FAISS store into Milvus). Item ids and acknowledgement "
        "times are kept, and items already there are skipped, so an interrupted import can be "
        "run again.",
    )
    _add_store_options(gimport)
    gimport.add_argument("--input", required=True, metavar="PATH", help="archive to read")
    gimport.add_argument("--gallery", help="target gallery (default: the exported gallery's name)")
    gimport.set_defaults(handler=_cmd_gallery_import)


def _add_serve_options(serve: argparse.ArgumentParser, footage: str, demo_epochs: int) -> None:
    """The options ``sona serve`` and ``sona demo`` share (``footage``: the clip's option)."""
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--data-dir", help="gallery data folder (SONA_DATA_DIR, default ./data)")
    serve.add_argument("--device", help="auto, cpu, cuda, cuda:N (SONA_DEVICE)")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="log lines at this level and above (SONA_LOG_FORMAT=json: JSON lines)",
    )
    serve.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="on SIGTERM, seconds to finish in-flight requests (default 30)",
    )
    serve.add_argument(
        "--ssl-certfile",
        metavar="PEM",
        default=os.environ.get("SONA_SSL_CERTFILE") or None,
        help="serve HTTPS with this certificate (chain) file (default: SONA_SSL_CERTFILE)",
    )
    serve.add_argument(
        "--ssl-keyfile",
        metavar="PEM",
        default=os.environ.get("SONA_SSL_KEYFILE") or None,
        help="the certificate's private key (default: SONA_SSL_KEYFILE)",
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
        default=int(os.environ.get("SONA_DEMO_EPOCHS", demo_epochs)),
        help="demo only: training epochs; the tiny preset's full schedule is 40 (default 8)",
    )
    serve.add_argument(
        footage,
        dest="demo_footage",
        metavar="VIDEO",
        default=os.environ.get("SONA_DEMO_FOOTAGE") or None,
        help="demo only: a video of people walking; the demo model is adapted to its tracks "
        "and the gallery is its tracks (default: SONA_DEMO_FOOTAGE; none: synthetic people)",
    )
    serve.add_argument(
        "--demo-footage-seconds",
        type=float,
        metavar="S",
        default=os.environ.get("SONA_DEMO_FOOTAGE_SECONDS") or None,
        help="demo footage only: its first S seconds (default: SONA_DEMO_FOOTAGE_SECONDS; "
        "none: all of it)",
    )
    serve.add_argument(
        "--demo-adapt-epochs",
        type=int,
        default=os.environ.get("SONA_DEMO_ADAPT_EPOCHS") or "4",
        help="demo footage only: epochs of adaptation (default: SONA_DEMO_ADAPT_EPOCHS, else 4)",
    )
