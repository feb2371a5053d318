"""Logging for ``sona serve``: the service's own loggers beside uvicorn's, as text or JSON.

uvicorn configures only its own loggers, so without this the service's INFO lines (such as
"ready: ... DEMO") never appear. Text lines look like uvicorn's; ``SONA_LOG_FORMAT=json`` writes
one JSON object per line (time, level, logger, message, request_id and, for access lines,
method, path, status, duration_ms) for log shippers. uvicorn's access log is replaced by the
service's (``sona.access``), whose lines carry the request id.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["LogFormat", "log_config"]

LogFormat = Literal["text", "json"]

_JSON = {
    "()": "pythonjsonlogger.json.JsonFormatter",
    "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
    "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
    "timestamp": False,
}


def log_config(level: str = "info", fmt: LogFormat = "text") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn's ``log_config``."""
    level = level.upper()
    if fmt == "json":
        formatters = {"default": _JSON, "access": _JSON}
    else:
        formatters = {
            "default": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(levelprefix)s %(message)s",
            },
            "access": {
                "()": "uvicorn.logging.DefaultFormatter",
                "fmt": "%(levelprefix)s %(message)s",
            },
        }
    handler = {
        "class": "logging.StreamHandler",
        "filters": ["request_id"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": "service.request_id.RequestIdFilter"}},
        "formatters": formatters,
        "handlers": {
            "default": {**handler, "formatter": "default", "stream": "ext://sys.stderr"},
            "access": {**handler, "formatter": "access", "stream": "ext://sys.stdout"},
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["access"], "level": "WARNING", "propagate": False},
            "sona": {"handlers": ["default"], "level": level, "propagate": False},
            "sona.access": {"handlers": ["access"], "level": level, "propagate": False},
            # modules that log under their own names (service.store.faiss...; model...)
            "service": {"handlers": ["default"], "level": level, "propagate": False},
            "model": {"handlers": ["default"], "level": level, "propagate": False},
        },
    }
