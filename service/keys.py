"""The key file: API keys with a role and optional galleries, stored as hashes.

``sona keys add`` makes a key, prints it once and stores only its SHA-256 digest with the
key's name, role, galleries and creation time in ``SONA_KEYS_FILE`` (mode 0600, replaced
atomically, so a reader sees the old file or the new one, never half of one). The service
re-reads the file when it changes (``KeyTable``), so a revocation needs no restart.

Why SHA-256 and not a slow password hash: a slow hash protects secrets a person chose, which
an attacker can guess. These keys are 256 random bits; nobody can enumerate them, so a fast
hash loses nothing, and the check of every request stays a few microseconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

__all__ = [
    "FORMAT",
    "KEY_NAME",
    "ROLES",
    "KeyFileError",
    "KeyRecord",
    "KeyTable",
    "Principal",
    "Role",
    "add_key",
    "hash_key",
    "load_records",
    "revoke_key",
]

Role = Literal["search", "ingest", "admin"]
#: Each role may do what the roles before it may, and more.
ROLES: tuple[Role, ...] = ("search", "ingest", "admin")
KEY_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
#: The stores' gallery-name rule, here so that ``sona keys`` loads no store.
GALLERY = re.compile(r"[A-Za-z0-9_-]{1,64}")
FORMAT = "sona-keys/1"
_PREFIX = "sona_"  # makes a leaked key easy to find for secret scanners


class KeyFileError(ValueError):
    """The key file cannot be read or changed as asked; the message says why in one line."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts for: a key's name, role and galleries (None: every gallery)."""

    name: str | None  # None: no keys are configured, the service is open
    role: Role
    galleries: frozenset[str] | None = None

    def may(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def sees(self, gallery: str) -> bool:
        return self.galleries is None or gallery in self.galleries


@dataclass(frozen=True)
class KeyRecord:
    name: str
    role: Role
    galleries: tuple[str, ...] | None
    created: str
    sha256: str | None  # None once revoked
    revoked: str | None = None

    def principal(self) -> Principal:
        galleries = None if self.galleries is None else frozenset(self.galleries)
        return Principal(self.name, self.role, galleries)

    def as_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None or k == "galleries"}


def hash_key(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).digest()


def _record(obj: object) -> KeyRecord:
    if not isinstance(obj, dict):
        raise KeyFileError("each key must be a JSON object")
    try:
        galleries = obj.get("galleries")
        record = KeyRecord(
            name=str(obj["name"]),
            role=obj["role"],
            galleries=None if galleries is None else tuple(str(g) for g in galleries),
            created=str(obj["created"]),
            sha256=obj.get("sha256"),
            revoked=obj.get("revoked"),
        )
    except (KeyError, TypeError) as exc:
        raise KeyFileError(f"a key lacks a field or has a wrong one: {exc}") from None
    if record.role not in ROLES:
        raise KeyFileError(f"key {record.name!r} has an unknown role {record.role!r}")
    if record.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", record.sha256):
        raise KeyFileError(f"key {record.name!r} has no valid sha256 digest")
    return record


def load_records(path: Path) -> list[KeyRecord]:
    """The file's keys, revoked ones included; [] when there is no file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyFileError(f"the key file {path} is not valid JSON: {exc.msg}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise KeyFileError(f"the key file {path} is not a {FORMAT} file")
    keys = data.get("keys")
    if not isinstance(keys, list):
        raise KeyFileError(f"the key file {path} has no list of keys")
    return [_record(k) for k in keys]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time: two ``sona keys add`` at once must not lose one of the keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write(path: Path, records: Sequence[KeyRecord]) -> None:
    """Replace the file atomically, mode 0600 from its first byte, durable before returning."""
    body = json.dumps({"format": FORMAT, "keys": [r.as_json() for r in records]}, indent=2)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an umask cannot widen it, an old file cannot keep its mode
        os.write(fd, (body + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def add_key(path: Path, name: str, role: str, galleries: Sequence[str] | None = None) -> str:
    """A new key for ``name``: stores its digest, returns the key (shown once, never stored)."""
    if not KEY_NAME.fullmatch(name):
        raise KeyFileError(f"bad key name {name!r}: use [A-Za-z0-9_.@-]{{1,64}}")
    if role not in ROLES:
        raise KeyFileError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    scope = None
    if galleries:
        bad = [g for g in galleries if not GALLERY.fullmatch(g)]
        if bad:
            raise KeyFileError(f"bad gallery name {bad[0]!r}: use [A-Za-z0-9_-]{{1,64}}")
        scope = tuple(sorted(set(galleries)))
    key = _PREFIX + secrets.token_urlsafe(32)
    with _locked(path):
        records = load_records(path)
        same = [r for r in records if r.name == name]
        if same:
            why = "was revoked; names are not reused" if same[0].revoked else "exists"
            raise KeyFileError(f"a key named {name!r} {why}, so the audit trail stays unambiguous")
        record = KeyRecord(name, role, scope, _now(), hash_key(key).hex())  # type: ignore[arg-type]
        _write(path, [*records, record])
    return key


def revoke_key(path: Path, name: str) -> KeyRecord:
    """Forget the key's digest (the name stays, marked revoked); the service refuses it at
    its next request."""
    with _locked(path):
        records = load_records(path)
        for index, record in enumerate(records):
            if record.name == name and record.revoked is None:
                done = KeyRecord(
                    record.name, record.role, record.galleries, record.created, None, _now()
                )
                records[index] = done
                _write(path, records)
                return done
    raise KeyFileError(f"no active key named {name!r}")


class KeyTable:
    """The keys a service accepts: ``SONA_API_KEYS`` (admin, every gallery) and the key file,
    re-read when its identity, size or time changes (one ``stat`` per request).

    Keys are required once either source holds one or the file exists; a file deleted or
    emptied later leaves them required (no key is let in), it never opens the service. A file
    that cannot be read refuses every key of the file until it is fixed, and says so in the
    log once.
    """

    def __init__(self, path: Path, env_keys: Sequence[bytes], on_error=None) -> None:
        self.path = path
        self._env = [
            (hash_key(k), Principal(f"SONA_API_KEYS#{i}", "admin"))
            for i, k in enumerate(env_keys, start=1)
        ]
        self._file: list[tuple[bytes, Principal]] = []
        self._seen: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._on_error = on_error
        self.required = bool(self._env)
        self.refresh()

    def refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._file, self._seen = [], None
            return
        except OSError:
            st = None
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns) if st else (0, 0, 0)
        if stamp == self._seen:
            return
        with self._lock:
            if stamp == self._seen:
                return
            try:
                records = load_records(self.path)
            except KeyFileError as exc:
                records = []
                if self._on_error:
                    self._on_error(f"{exc}: no key of the file is accepted until it is fixed")
            self._file = [
                (bytes.fromhex(r.sha256), r.principal()) for r in records if r.sha256 is not None
            ]
            self._seen = stamp
            self.required = True

    def lookup(self, presented: bytes) -> Principal | None:
        """The principal of ``presented``, comparing its digest with every key's in constant
        time: no early exit, so the time does not tell which key (if any) matched."""
        self.refresh()
        digest = hash_key(presented)
        found = None
        for known, principal in (*self._env, *self._file):
            if hmac.compare_digest(digest, known) and found is None:
                found = principal
        return found
