"""Is a model hub reachable? Answer fast, so that a missing weight never hangs."""

from __future__ import annotations

import os
import socket
from functools import cache

_OFFLINE_VARS = ("HEADSTART_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_reason(host: str) -> str | None:
    """None when ``host`` can be reached; otherwise why not (offline variable or no connection)."""
    for var in _OFFLINE_VARS:
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"{var} is set, so nothing is downloaded"
    if not _reachable(host):
        return f"{host} cannot be reached from this machine (no network)"
    return None


@cache
def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
