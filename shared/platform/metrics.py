"""Prometheus metrics on a listener of their own, apart from the public API port.

The counters say what happened to requests (a wrong password for a real name appends an
event that consumers count; an unknown name does not), so they are for Prometheus only:
loopback by default, a port per process kind, and never a route of the public API.
"""

from __future__ import annotations

import logging

from prometheus_client import start_http_server

from shared.platform.config import ConfigurationError, Settings

__all__ = ["METRICS_PORTS", "serve_metrics"]

log = logging.getLogger(__name__)

METRICS_PORTS = {"relay": 9000, "auth": 9001, "enrolment": 9002, "audit": 9003}


def serve_metrics(settings: Settings, process: str) -> int | None:
    """Serve ``/metrics`` for this process on ``TWOFA_METRICS_HOST``:``TWOFA_METRICS_PORT``
    (a thread beside the app); the port, or None when the port is 0 (no listener)."""
    port = METRICS_PORTS[process] if settings.metrics_port is None else settings.metrics_port
    if port == 0:
        return None
    try:
        start_http_server(port, addr=settings.metrics_host)
    except OSError as exc:
        raise ConfigurationError(
            f"TWOFA_METRICS_PORT: cannot listen on {settings.metrics_host}:{port} ({exc.strerror})"
        ) from None
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)
    return port
