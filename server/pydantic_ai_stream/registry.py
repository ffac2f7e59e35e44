"""Per-process helpers kept one per Redis client and event loop, and dropped when idle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["PerClient"]

T = TypeVar("T")


class PerClient(Generic[T]):
    """One `T` per (Redis client, running loop), created on first use.

    Keyed by the client's identity, not equality (cluster clients compare equal by their nodes), and
    checked against the client it was made for, since an identity can be reused once a client is gone.
    """

    def __init__(self, make: Callable[[Any], T], client_of: Callable[[T], Any]) -> None:
        self._make, self._client_of = make, client_of
        self._items: dict[tuple[int, int], T] = {}

    def get(self, redis: Any) -> T:
        key = (id(redis), id(asyncio.get_running_loop()))
        item = self._items.get(key)
        if item is None or self._client_of(item) is not redis:
            item = self._items[key] = self._make(redis)
        return item

    def drop(self, item: T) -> None:
        """Forget `item` (it has nothing left to do); the next `get` makes a new one."""
        for key, held in list(self._items.items()):
            if held is item:
                del self._items[key]
