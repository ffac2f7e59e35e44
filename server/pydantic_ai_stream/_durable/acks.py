"""`JobAcks`: a worker's jobs done, acknowledged together: the runs that end while one acknowledgement is in
flight share the next round trip, so a busy worker pays about one per batch of runs, not one per run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from .queue import RunQueue

__all__ = ["JobAcks"]

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class JobAcks:
    """`RunQueue.done` for many jobs at once, one round trip in flight at a time (the first job goes at once)."""

    queue: Callable[[], RunQueue]
    _waiting: list[tuple[str, asyncio.Future[None]]] = field(default_factory=list)
    _flushing: asyncio.Task[None] | None = None

    async def done(self, job_id: str) -> None:
        """The job `job_id` is acknowledged and deleted when this returns, or left pending if Redis failed
        (logged: a worker takes it over later and finds its run over)."""
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((job_id, acked))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush())
        await acked

    async def aclose(self) -> None:
        """Wait for the acknowledgements in flight."""
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)

    async def _flush(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self.queue().done(*(job_id for job_id, _ in batch))
            except (RedisError, OSError) as e:
                logger.warning("could not acknowledge %d jobs (%s); they are taken over later", len(batch), e)
            finally:
                for _, acked in batch:
                    with contextlib.suppress(asyncio.InvalidStateError):
                        acked.set_result(None)
