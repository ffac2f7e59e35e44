"""asyncio rules the package's loops share."""

from __future__ import annotations

import asyncio

__all__ = ["raise_if_cancelled", "resolve"]


def raise_if_cancelled() -> None:
    """Raise `CancelledError` if this task was asked to cancel. For the loops around Redis calls that a cancel
    stops: a cancel a library turned into an error (Python 3.11's `asyncio.timeout` does when its deadline
    passes as the cancel arrives), or dropped as its call completed (Python 3.11's `asyncio.wait_for`, which
    redis-py sends every command through when it has a socket timeout), must end the loop, not be lost."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def resolve(waiter: asyncio.Future[None]) -> None:
    """Set `waiter`'s result unless it is done: for a wait that a timer and a wake-up may both end."""
    if not waiter.done():
        waiter.set_result(None)
