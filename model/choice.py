"""Which runtime serves an export on this CPU: a short measured probe, remembered.

ONNX Runtime and OpenVINO run the same int8 export; which is faster depends on the CPU's
instruction sets and on the versions installed, so the service measures both on the shapes it
serves, keeps the faster, and writes the figures to a cache keyed by everything that decides
them (the export's bytes, the CPU, the threads, the runtimes' versions). A later start on the
same machine reads the answer instead of measuring again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from .cpu import cpu_info
from .encoders import Encoder

__all__ = ["EncoderChoice", "probe_fastest"]

log = logging.getLogger("sona.model")

#: Runtimes the probe compares, by the name an encoder reports as ``runtime``.
RUNTIME_PACKAGES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


@dataclass(frozen=True)
class EncoderChoice:
    """Why the service runs the encoder it runs: what ``/readyz`` and the start-up log show."""

    runtime: str
    chosen_by: str  # setting, probe, cache, only candidate, no export
    reason: str
    cpu: str = field(default_factory=lambda: cpu_info().describe())
    probe: dict[str, float] = field(default_factory=dict)  # runtime -> embeddings/s

    def as_dict(self) -> dict:
        return asdict(self)


def _versions(runtimes: list[str]) -> dict[str, str]:
    found = {}
    for runtime in runtimes:
        try:
            found[runtime] = metadata.version(RUNTIME_PACKAGES[runtime])
        except metadata.PackageNotFoundError:
            found[runtime] = "?"
    return found


def _cache_key(export: Path, runtimes: list[str], batch: int) -> str:
    digest = hashlib.sha256()
    with export.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    facts = {
        "export": digest.hexdigest(),
        "cpu": cpu_info().describe(),
        "threads": torch.get_num_threads(),
        "versions": _versions(runtimes),
        "batch": batch,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path | None, key: str) -> dict[str, float] | None:
    if path is None:
        return None
    try:
        entry = json.loads(path.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None
    return entry if isinstance(entry, dict) and entry else None


def _write_cache(path: Path | None, key: str, rates: dict[str, float]) -> None:
    if path is None:
        return
    try:
        try:
            entries = json.loads(path.read_text())
            entries = entries if isinstance(entries, dict) else {}
        except (OSError, ValueError):
            entries = {}
        entries[key] = rates
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(entries, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:  # a read-only data folder: measure again next time
        log.warning("cannot cache the encoder probe in %s: %s", path, exc.strerror)


def _measure(encoders: dict[str, Encoder], batch: int, seconds: float) -> dict[str, float]:
    """Embeddings/s of each encoder on ``batch`` random crops, in interleaved rounds."""
    h, w = next(iter(encoders.values())).input_size
    images = torch.randint(0, 256, (batch, 3, h, w), generator=torch.Generator().manual_seed(0))
    images = images.to(torch.uint8)
    for encoder in encoders.values():
        encoder(images)  # first call: allocation, kernel selection
    best = dict.fromkeys(encoders, float("inf"))
    start, rounds = time.perf_counter(), 0
    while rounds < 2 or (rounds < 10 and time.perf_counter() - start < seconds):
        for name, encoder in encoders.items():
            t = time.perf_counter()
            encoder(images)
            best[name] = min(best[name], time.perf_counter() - t)
        rounds += 1
    return {name: round(batch / best[name], 3) for name in encoders}


def probe_fastest(
    export: Path,
    factories: dict[str, Callable[[], Encoder]],
    *,
    cache: Path | None = None,
    batch: int = 8,
    seconds: float = 5.0,
) -> tuple[Encoder, EncoderChoice]:
    """The fastest of ``factories`` (runtime -> encoder of ``export``), and why.

    Each runs ``batch`` crops at least twice, interleaved with the others, for about
    ``seconds``; the best time of each counts. The figures go to ``cache`` (a JSON file).
    """
    runtimes = sorted(factories)
    key = _cache_key(export, runtimes, batch)
    rates = _read_cache(cache, key)
    if rates is not None and set(rates) == set(runtimes):
        runtime = max(rates, key=rates.get)
        chosen_by = "cache"
        encoder = factories[runtime]()
    else:
        encoders = {name: factory() for name, factory in factories.items()}
        rates = _measure(encoders, batch, seconds)
        runtime = max(rates, key=rates.get)
        chosen_by = "probe"
        encoder = encoders[runtime]
        _write_cache(cache, key, rates)
    figures = ", ".join(f"{name} {rate:.1f}" for name, rate in sorted(rates.items()))
    klass = cpu_info().isa_class
    reason = (
        f"the fastest on this {klass} CPU at batch {batch} "
        f"({'measured earlier' if chosen_by == 'cache' else 'measured at start'}; "
        f"embeddings/s: {figures})"
    )
    return encoder, EncoderChoice(runtime, chosen_by, reason, probe=rates)
