"""The fleet's agents: each worker advertises the agents it hosts while it lives, so a server that executes
nothing itself (`serve --concurrency 0`) accepts runs of the agents its workers host, with no list of its own.

One hash, `{prefix}::workers`: a field per worker, its name, holding `<until ms> <agents as JSON>` (`until` on
Redis's clock: the machines' clocks need not agree). A worker renews its field every lease renewal interval to
a lease TTL ahead and deletes it when it stops; the field of a worker that died lapses with its lease (readers
skip it, the next renewal of any worker deletes it). Reading the fleet is one script call on one key (a slot
of its own on a Redis Cluster), O(workers), no `SCAN`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import RedisError

from .._core.aio import raise_if_cancelled
from .._core.entry import decode
from .._core.keys import workers_key
from .._core.settings import Configured
from .._store.redis import AsyncRedis
from .scripts import advertise, live_agents

__all__ = ["Advertisement", "FleetRedis", "fleet_agents"]

logger = logging.getLogger(__name__)


class FleetRedis(Configured, Protocol):
    """Where the fleet's hash is (a `Runtime`): its Redis, and the settings that name the key and time renewals."""

    @property
    def redis(self) -> AsyncRedis: ...


@dataclass(eq=False, kw_only=True)
class Advertisement:
    """A worker's field in the fleet's hash, renewed while it runs and deleted when it stops."""

    runtime: FleetRedis
    worker: str
    agents: Collection[str]
    _task: asyncio.Task[None] | None = None

    @property
    def _key(self) -> str:
        return workers_key(self.runtime.settings.redis_prefix)

    def start(self) -> None:
        """Advertise the agents now and renew them in the background (Redis need not answer yet)."""
        self._task = asyncio.create_task(self._renew())

    async def aclose(self) -> None:
        """Stop renewing and withdraw the agents: the fleet no longer counts them (if the withdrawal fails, the
        field lapses a lease TTL after its last renewal)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            await asyncio.shield(self.runtime.redis.hdel(self._key, self.worker))

    async def _renew(self) -> None:
        config = self.runtime.settings
        agents = json.dumps(sorted(self.agents))
        while True:
            raise_if_cancelled()  # a cancel the last Redis call completed over still stops us
            try:
                ttl_ms = int(config.lease_ttl * 1000)
                await advertise(self.runtime.redis, workers=self._key, worker=self.worker, ttl_ms=ttl_ms, agents=agents)
            except (RedisError, OSError) as e:
                raise_if_cancelled()
                logger.warning("worker %s could not advertise its agents (%s)", self.worker, e)
            await asyncio.sleep(config.lease_renew_interval)  # a periodic timer, not synchronisation


async def fleet_agents(runtime: FleetRedis) -> frozenset[str]:
    """The agents the live workers of `runtime`'s Redis and prefix host, as they advertise them."""
    live = await live_agents(runtime.redis, workers=workers_key(runtime.settings.redis_prefix))
    return frozenset(name for value in live for name in json.loads(decode(value)))
