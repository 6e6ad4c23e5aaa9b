"""Waiting in the integration tests: for a condition (with what it waits for in the failure),
or for whatever a consumer reads in a while."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rollstream.services.runtime.bus import Consumer, Record


def wait_until(cond: Callable[[], Any], timeout_s: float, what: str, every: float = 0.2) -> Any:
    """`cond()`'s first true value; fails naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every)


def read_for(consumer: Consumer, seconds: float) -> list[Record[Any]]:
    """Whatever arrives within `seconds`."""
    out: list[Record[Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out += consumer.poll(timeout_s=0.2)
    return out
