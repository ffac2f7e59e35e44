"""The live flag as a lease: renewed while its run lives here, and the way cancels reach the run.

One `LeaseKeeper` per `Runtime` (the owner of its tasks) serves every run of the process: it renews all
their leases in one pipeline per interval, and holds one Pub/Sub subscription on which `cancel()`
from any process is announced. A missed announcement is still seen at the next renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pydantic_ai import CancellationToken
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .._core.aio import raise_if_cancelled
from .._core.entry import decode
from .._core.keys import SessionKeys, cancel_channel
from .._core.settings import Settings
from .._store.cluster import renew_many
from .._store.redis import AsyncRedis, is_cluster
from .._store.results import LeaseState
from .._store.stream import SessionStream

__all__ = ["Lease", "LeaseKeeper", "WaitingRuns"]

logger = logging.getLogger(__name__)


class WaitingRuns(Protocol):
    """The run queue as a renewal sees it (`RunQueue`, a layer above, fills it in)."""

    @property
    def wait_ms(self) -> int:
        """How long a durable run's record, and a run waiting behind a renewed lease, is kept."""

    async def keep_waiting(self, runs: Sequence[tuple[SessionKeys, str]]) -> None:
        """The runs `(session keys, run id)` still wait behind their session's run: keep them counted."""


@dataclass(eq=False, kw_only=True)
class Lease:
    """A run's hold on its session's live flag; `token` cancels the pydantic-ai run."""

    stream: SessionStream
    run_id: str
    keeper: LeaseKeeper
    """The keeper renewing it (and the one to release it to)."""
    token: CancellationToken = field(default_factory=CancellationToken)
    durable: bool = False
    """A run from the run queue: each renewal keeps its record (what another worker resumes it from) too."""
    lost: bool = False
    """The flag expired or was taken: the run must stop and must not save."""
    cancelled_at: float | None = None
    """When (`time.monotonic()`) a cancel first reached this process (for the cancel latency)."""

    def cancel(self, *, lost: bool = False) -> None:
        """Stop the run: cancel its pydantic-ai token (from this loop, so it is delivered at once)."""
        self.lost = self.lost or lost
        if self.cancelled_at is None:
            self.cancelled_at = time.monotonic()
        self.token.cancel()


async def _node_client(redis: AsyncRedis) -> Redis:
    """A plain client for Pub/Sub: `redis` itself, or for a cluster a connection pool of its own to one node.

    Cluster-wide PUBLISH reaches every node, so any node will do; an own pool keeps the subscription
    clear of the cluster client's reconnections when its slot map is refreshed.
    """
    if not is_cluster(redis):
        return redis
    await redis.initialize()
    node = redis.get_default_node()
    return Redis(connection_pool=ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs))


@dataclass(eq=False, kw_only=True)
class LeaseKeeper:
    """Renews the leases of this process's runs and delivers cancel announcements to them."""

    redis: AsyncRedis
    settings: Settings
    """Lease timing and the key prefix (read when used, so a change applies to the next renewal)."""
    queue: Callable[[], WaitingRuns]
    """The run queue, under the current settings (read when used, as `settings` are)."""
    on_idle: Callable[[], None] = lambda: None
    """Called when the keeper stops (it holds no lease and no start is under way)."""
    _leases: dict[str, Lease] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    _starting: int = 0
    """Starts between `ready()` and `hold()`/`release(None)`."""
    _error: Exception | None = None

    @property
    def renew_interval(self) -> float:
        """Seconds between renewals."""
        return self.settings.lease_renew_interval

    @property
    def lease_ms(self) -> int:
        """Milliseconds a lease lives without renewal."""
        return int(self.settings.lease_ttl * 1000)

    @property
    def wait_ms(self) -> int:
        """Milliseconds a durable run's record outlives its last renewal (and a queued run waits for a worker)."""
        return self.queue().wait_ms

    @property
    def idle(self) -> bool:
        """Whether the keeper has no task running."""
        return not self._tasks

    async def aclose(self) -> None:
        """Stop renewing and listening for cancels, and close the subscription's connection."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def ready(self, timeout: float = 5.0) -> None:
        """Start the keeper if needed and wait until cancel announcements can reach this process
        (`redis.exceptions.TimeoutError` after `timeout` seconds).

        Every `ready()` that returns must be followed by `hold()` or `release(None)`: until then the
        keeper stays up, so a start refused meanwhile cannot stop it under one about to hold a lease.
        """
        self._starting += 1
        try:
            if not self._tasks:
                self._subscribed.clear()
                self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._renew())]
            try:
                async with asyncio.timeout(timeout):
                    await self._subscribed.wait()
            except TimeoutError:
                # Redis is stalled: a retryable Redis error (UNAVAILABLE), not a bare timeout.
                raise RedisTimeoutError(f"Redis did not confirm the cancel subscription within {timeout:g} s") from None
            if self._error is not None:
                # Redis could not be reached: fail the run's start now rather than run it blind.
                error, self._error = self._error, None
                raise error
        except BaseException:
            self.release(None)
            raise

    def hold(self, lease: Lease) -> None:
        """Keep `lease` renewed until `release`; ends the start that `ready()` began."""
        self._starting -= 1
        self._leases[lease.stream.keys.live] = lease

    def release(self, lease: Lease | None) -> None:
        """Stop renewing `lease` (`None`: a start that took no lease); the keeper stops when it holds nothing."""
        if lease is None:
            self._starting -= 1
        elif self._leases.get(lease.stream.keys.live) is lease:
            del self._leases[lease.stream.keys.live]
        if not self._leases and not self._starting:
            for task in self._tasks:
                task.cancel()
            self._tasks = []
            self.on_idle()

    async def _listen(self) -> None:
        channel = cancel_channel(self.settings.redis_prefix)
        pubsub = (await _node_client(self.redis)).pubsub()
        attempts = 0
        try:
            while True:
                attempts += 1
                try:
                    await pubsub.subscribe(channel)
                    # Only once the server confirms is a cancel published afterwards sure to arrive.
                    while await pubsub.get_message(timeout=1.0) is None:
                        pass
                    self._subscribed.set()
                    while True:
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                        raise_if_cancelled()  # a cancel the read completed over still stops us
                        if message is not None and message["type"] == "message":
                            lease = self._leases.get(decode(message["data"]))
                            if lease is not None:
                                lease.cancel()
                except (RedisError, OSError) as e:
                    raise_if_cancelled()
                    if not self._subscribed.is_set() and attempts >= 3:
                        self._error = e
                        self._subscribed.set()
                        return
                    if self._subscribed.is_set():
                        logger.warning("cancel subscription lost (%s); the lease renewal still sees cancels", e)
                    await asyncio.sleep(min(self.renew_interval, 0.05 * attempts))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(pubsub.aclose())  # type: ignore[no-untyped-call, unused-ignore]

    async def _renew(self) -> None:
        while True:
            raise_if_cancelled()  # a cancel the last renewal completed over still stops us
            await asyncio.sleep(self.renew_interval)
            leases = list(self._leases.values())
            try:
                states = await self._renew_all(leases)
            except RedisError as e:
                raise_if_cancelled()
                logger.warning("could not renew %d leases: %s", len(leases), e)
                continue
            for lease, state in zip(leases, states, strict=True):
                if self._leases.get(lease.stream.keys.live) is not lease:
                    continue  # released while renewing: the run closed its lease itself
                if state is LeaseState.CANCEL_REQUESTED:
                    lease.cancel()
                elif state is LeaseState.LOST:
                    logger.warning("run %s lost its lease on %s", lease.run_id, lease.stream.keys.session_id)
                    lease.cancel(lost=True)

    async def _renew_all(self, leases: list[Lease]) -> list[LeaseState]:
        """Renew `leases`; the runs waiting behind them stay counted as queued as long (see `RunQueue.keep_waiting`)."""
        if not leases:
            return []
        queue = self.queue()
        renewals = await renew_many(
            self.redis,
            [(lease.stream, lease.run_id, lease.durable) for lease in leases],
            lease_ms=self.lease_ms,
            wait_ms=queue.wait_ms,
        )
        waiting = [
            (lease.stream.keys, run_id)
            for lease, renewal in zip(leases, renewals, strict=True)
            for run_id in renewal.waiting
        ]
        await queue.keep_waiting(waiting)
        return [renewal.state for renewal in renewals]
