"""A start that takes a while (building the demo): the port opens at once, ``/readyz`` and the
page say what is being prepared and how far along it is.

``Progress`` is written by the preparing thread and read by ``/readyz``. ``Preparation`` runs
the work in a daemon thread (so stopping the server never waits for a training run) and hands
its result to the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Preparation", "Progress"]


class Progress:
    """The current stage, how much of it is done (0 to 1, when known), and a time estimate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stage = "starting"
        self.fraction: float | None = None
        self._since = time.monotonic()
        self._started = time.monotonic()

    def set(self, stage: str, fraction: float | None = None) -> None:
        with self._lock:
            if stage != self.stage:
                self._since = time.monotonic()
            self.stage = stage
            self.fraction = None if fraction is None else min(max(fraction, 0.0), 1.0)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            spent = now - self._since
            eta = None
            if self.fraction:
                eta = round(spent * (1 - self.fraction) / self.fraction, 1)
            return {
                "stage": self.stage,
                "fraction": None if self.fraction is None else round(self.fraction, 3),
                "stage_eta_s": eta,
                "elapsed_s": round(now - self._started, 1),
            }

    def describe(self) -> str:
        s = self.snapshot()
        text = s["stage"]
        if s["fraction"] is not None:
            text += f", {100 * s['fraction']:.0f}%"
        if s["stage_eta_s"] is not None:
            text += f", about {s['stage_eta_s']:.0f} s left"
        return text


class Preparation:
    """``work(progress)`` in a daemon thread; ``await wait()`` gives its result or raises."""

    def __init__(self, work: Callable[[Progress], Any]) -> None:
        self.progress = Progress()
        self._work = work

    async def wait(self) -> Any:
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def run() -> None:
            try:
                result = self._work(self.progress)
            except BaseException as exc:  # handed to the loop, which reports it
                loop.call_soon_threadsafe(_settle, done, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, done, result, None)

        threading.Thread(target=run, name="sona-prepare", daemon=True).start()
        return await done


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
