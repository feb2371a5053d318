"""Named sections run one after another under a budget, each behind a time guard, with the
figures rewritten after every row and every section.

Made for a machine lent for a few minutes: whatever stops the run (an exception, a section's
guard, SIGTERM from an outer timeout, SIGKILL between two writes), the JSON file holds every
figure measured until then and says which section failed and why. Torch-free on purpose.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

__all__ = ["GRACE_S", "Run", "Section", "SectionTimeout", "Terminated", "say", "sig"]

#: How far past its budget a run may go, by default, finishing the sections it must run.
GRACE_S = 60.0


class SectionTimeout(BaseException):
    """A section outran its guard (a BaseException, so no row's ``except Exception`` eats it)."""


class Terminated(BaseException):
    """SIGTERM arrived (an outer timeout): record what is in flight and stop."""


@dataclass
class Section:
    """One step of the run. ``optional`` ones start only while the budget has ``estimate_s``
    left; every section stops at ``cap_s`` or at the run's hard limit, whichever is first."""

    name: str
    run: Callable[[], Any]
    cap_s: float
    optional: bool = False
    estimate_s: float = 0.0


@dataclass
class Run:
    """The figures of one run and the JSON file they are kept in (``out``: None, none)."""

    out: Path | None
    budget_s: float
    header: dict[str, Any]
    fail: set[str] = field(default_factory=set)  # injected failures: "section" or "section:row"
    hang: set[str] = field(default_factory=set)  # injected hangs (sections), for the guard
    caps: dict[str, float] = field(default_factory=dict)  # per-section cap overrides
    grace_s: float = GRACE_S

    def __post_init__(self) -> None:
        self.started = time.monotonic()
        self.figures: dict[str, Any] = {
            **self.header,
            "budget_s": self.budget_s,
            "grace_s": self.grace_s,
            "started_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "finished": False,
            "elapsed_s": 0.0,
            "sections": {},
        }

    # -- time --------------------------------------------------------------------------
    def remaining(self) -> float:
        """Seconds of the budget left (negative once it is spent)."""
        return self.budget_s - (time.monotonic() - self.started)

    def hard_remaining(self) -> float:
        return self.remaining() + self.grace_s

    # -- figures -----------------------------------------------------------------------
    def write(self) -> None:
        """Replace the JSON file in one rename, so a kill at any moment leaves a whole one."""
        self.figures["elapsed_s"] = round(time.monotonic() - self.started, 1)
        if self.out is None:
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        partial = self.out.with_name(self.out.name + ".partial")
        with partial.open("w") as handle:
            handle.write(json.dumps(self.figures, indent=2, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, self.out)

    def set(self, section: str, values: dict[str, Any]) -> dict[str, Any]:
        """A section's figures as one dict (not rows): kept, printed and written at once."""
        self.figures[section] = values
        self.write()
        say(section, json.dumps(values, default=str))
        return values

    def row(
        self, section: str, keys: dict[str, Any], measure: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """One row of ``section``: ``keys`` and what ``measure`` returns, or ``keys`` and the
        error it raised. Either way the row is kept and written before the next one starts."""
        label = "/".join(str(v) for v in keys.values())
        try:
            self._inject(f"{section}:{label}")
            row = keys | measure()
        except Exception as error:  # a failed row is a figure too: say what failed
            row = keys | _error(error)
            self._section_record(section)["row_errors"] = (
                self._section_record(section).get("row_errors", 0) + 1
            )
        return self._keep(section, row)

    def skip_row(self, section: str, keys: dict[str, Any], reason: str) -> dict[str, Any]:
        return self._keep(section, keys | {"skipped": reason})

    def _keep(self, section: str, row: dict[str, Any]) -> dict[str, Any]:
        self.figures.setdefault(section, []).append(row)
        self.write()
        say(section, json.dumps(row, default=str))
        return row

    def _section_record(self, section: str) -> dict[str, Any]:
        return self.figures["sections"].setdefault(section, {"status": "running"})

    def _inject(self, where: str) -> None:
        if where in self.fail:
            raise RuntimeError(f"injected failure at {where} (--fail-section)")

    # -- sections ----------------------------------------------------------------------
    def run(self, sections: Iterable[Section]) -> int:
        """Run every section in order; the exit status: 0 all well, 1 a section or row
        failed, 143 terminated (the figures are written in every case)."""
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        pending = list(sections)
        try:
            while pending:
                self._run_one(pending.pop(0))
        except Terminated:
            for record in self.figures["sections"].values():
                if record["status"] == "running":  # stopped before its own handler ran
                    record.update(status="terminated", error="SIGTERM (an outer time limit)")
            for section in pending:
                self.figures["sections"][section.name] = {"status": "not run: terminated"}
            self.write()
            self._summary()
            return 143
        finally:
            signal.signal(signal.SIGTERM, previous)
        self.figures["finished"] = True
        self.write()
        self._summary()
        failed = any(
            record["status"] not in ("ok", "skipped") or record.get("row_errors")
            for record in self.figures["sections"].values()
        )
        return 1 if failed else 0

    def _run_one(self, section: Section) -> None:
        record = self._section_record(section.name)
        record["status"] = "running"
        left, hard_left = self.remaining(), self.hard_remaining()
        if section.optional and (left <= 0 or left < section.estimate_s):
            record.update(
                status="skipped",
                reason=f"budget: {max(left, 0):.0f} s left, needs about {section.estimate_s:.0f}",
            )
        elif hard_left <= 0:
            record.update(status="skipped", reason="past the budget and its grace")
        if record["status"] == "skipped":
            self.write()
            say(f"== {section.name}: skipped ({record['reason']})")
            return
        guard = min(
            self.caps.get(section.name, section.cap_s), left if section.optional else hard_left
        )
        record["guard_s"] = round(guard, 1)
        self.write()
        say(f"== {section.name} (guard {guard:.0f} s)")
        start = time.monotonic()
        previous = signal.signal(signal.SIGALRM, _raise_timeout)
        signal.setitimer(signal.ITIMER_REAL, max(guard, 0.001))
        try:
            self._inject(section.name)
            if section.name in self.hang:
                while True:
                    time.sleep(0.1)
            section.run()
            record["status"] = "ok"
        except SectionTimeout:
            record.update(status="timed out", error=f"stopped by its {guard:.0f} s guard")
        except Terminated:
            record.update(status="terminated", error="SIGTERM (an outer time limit)")
            raise
        except Exception as error:
            record.update(status="error", **_error(error))
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            record["seconds"] = round(time.monotonic() - start, 1)
            self.write()
            say(f"== {section.name}: {record['status']} in {record['seconds']} s")

    def _summary(self) -> None:
        say(f"-- summary ({self.figures['elapsed_s']} s of a {self.budget_s:.0f} s budget)")
        for name, record in self.figures["sections"].items():
            extra = record.get("error") or record.get("reason") or ""
            errors = f", {record['row_errors']} row error(s)" if record.get("row_errors") else ""
            say(f"   {name:<13} {record['status']}{errors} {extra}".rstrip())
        if self.out is not None:
            say(f"   figures: {self.out}")


def _error(error: BaseException) -> dict[str, Any]:
    """The one-line error for the figures; the whole traceback goes to the log (stderr)."""
    text = traceback.format_exc()
    say(text, stream=sys.stderr)
    line = f"{type(error).__name__}: {error}".splitlines()[0][:500]
    return {"error": line, "traceback_tail": text[-1500:]}


def say(*parts: object, stream: TextIO | None = None) -> None:
    """Print and flush; a closed pipe (the log's reader gone first) must not cost a figure."""
    with contextlib.suppress(OSError):  # BrokenPipeError among them
        print(*parts, file=stream or sys.stdout, flush=True)


def _raise_timeout(signum: int, frame: object) -> None:
    raise SectionTimeout


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def sig(value: float | None, digits: int = 3) -> float | None:
    """``value`` to ``digits`` significant digits (CPU smoke figures are tiny, GPU ones big)."""
    if value is None or value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))
