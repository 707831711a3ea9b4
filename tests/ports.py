"""Ports on 127.0.0.1 for the tests that start servers or point at one that is not there."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port that was free a moment ago; nothing listens on it once this returns."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
