"""`LiveRun`: the write side of one run: its lease on the session, its stream writer, its event mapper."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import CancellationToken

from ._errors import LeaseLostError, RunExistsError, SessionBusyError
from ._events import EventMapper
from ._keys import SessionKeys, check_id
from ._lease import Lease
from ._names import EVENT, ORIGIN_PYDANTIC_AI
from ._redis import OpenState, SessionStream
from ._runtime import Runtime
from ._writer import StreamWriter

__all__ = ["LiveRun"]


@dataclass(eq=False, kw_only=True)
class LiveRun:
    """A run that holds its session: what it writes goes to the stream in order, fenced by its lease."""

    run_id: str
    begin_event_id: str
    begin: Mapping[str, Any]
    """The body of the run's `begin` (its ids, and what its starter added, e.g. `user_prompt`)."""
    lease: Lease
    writer: StreamWriter
    mapper: EventMapper = field(default_factory=EventMapper)
    """Numbers the run's nodes and turns pydantic-ai events into bodies."""

    @classmethod
    async def open(
        cls, runtime: Runtime, keys: SessionKeys, *, run_id: str | None = None, body: Mapping[str, Any] | None = None
    ) -> LiveRun:
        """Take the session's live flag and write `begin` (the ids, then `body`) to a fresh stream.

        Raises `SessionBusyError`, writing nothing, if another run of the session is live, and
        `RunExistsError` if `run_id` is the session's live run or its last one (a retry).
        """
        run_id = check_id("run_id", run_id) if run_id is not None else uuid.uuid4().hex
        stream = runtime.stream(keys)
        keeper = runtime.leases
        # A Redis that cannot answer within a lease's lifetime could not keep the run's lease either.
        await keeper.ready(timeout=runtime.settings.lease_ttl)
        ids = {"session_id": keys.session_id, "run_id": run_id}
        begin = {**ids, **(body or {}), **ids}  # the ids first, as `open` needs, and not overridden by `body`
        try:
            state, begin_event_id = await stream.open(
                run_id=run_id, lease_ms=keeper.lease_ms, begin=begin, nonce=uuid.uuid4().hex
            )
        except BaseException:
            keeper.release(None)
            raise
        if state is not OpenState.OPENED:
            keeper.release(None)
            if state is OpenState.EXISTS:
                raise RunExistsError(keys.session_id, run_id=run_id, begin_event_id=begin_event_id)
            raise SessionBusyError(keys.session_id)
        return cls._held(runtime, stream, run_id=run_id, begin_event_id=begin_event_id, begin=begin)

    @classmethod
    async def adopt(cls, runtime: Runtime, keys: SessionKeys, *, run_id: str) -> LiveRun | None:
        """Take over the queued run `run_id` (its `begin` is written): its flag becomes this process's lease.
        `None` if it is no longer queued (cancelled, expired, or another worker's)."""
        stream = runtime.stream(keys)
        keeper = runtime.leases
        await keeper.ready(timeout=runtime.settings.lease_ttl)
        try:
            begin = await stream.adopt(run_id=run_id, lease_ms=keeper.lease_ms)
        except BaseException:
            keeper.release(None)
            raise
        if begin is None:
            keeper.release(None)
            return None
        return cls._held(runtime, stream, run_id=run_id, begin_event_id=begin.id, begin=begin.body)

    @classmethod
    def _held(
        cls, runtime: Runtime, stream: SessionStream, *, run_id: str, begin_event_id: str, begin: Mapping[str, Any]
    ) -> LiveRun:
        """The run whose lease was just taken, renewed by the runtime's keeper from now on."""
        lease = Lease(stream=stream, run_id=run_id, keeper=runtime.leases)
        writer = StreamWriter(stream=stream, run_id=run_id, combiner=runtime.writes, last_id=begin_event_id)
        runtime.leases.hold(lease)
        return cls(run_id=run_id, begin_event_id=begin_event_id, begin=begin, lease=lease, writer=writer)

    @property
    def token(self) -> CancellationToken:
        """The pydantic-ai token a cancel of this run (from any process) fires."""
        return self.lease.token

    @property
    def lost(self) -> bool:
        """Whether the run lost its live flag (it must stop without saving)."""
        return self.lease.lost

    async def rolled_back(self) -> bool:
        """Whether the run was cancelled to be rolled back: its messages are not to be saved."""
        return await self.lease.stream.rolled_back(self.run_id)

    async def add(self, type: str, origin: str, body: Mapping[str, Any] | None = None) -> None:
        """Queue an entry; it is written with the next round trip, in order."""
        await self._guarded(self.writer.add(type, origin, body))

    async def add_node_begin(self) -> None:
        """Append `llm-begin`: a model request node starts."""
        await self.add(EVENT, ORIGIN_PYDANTIC_AI, self.mapper.node_begin())

    async def add_node_end(self) -> None:
        """Append `llm-end`: the model's response has streamed in full."""
        await self.add(EVENT, ORIGIN_PYDANTIC_AI, self.mapper.node_end())

    async def add_node_event(self, event: object) -> None:
        """Append the body of a pydantic-ai stream event, if it carries anything to show."""
        body = self.mapper.event(event)
        if body is not None:
            await self.add(EVENT, ORIGIN_PYDANTIC_AI, body)

    async def flush(self) -> None:
        """Wait until every entry added so far is in Redis."""
        await self._guarded(self.writer.flush())

    async def close(self, *, grace_ms: int) -> None:
        """Write `end`, release the live flag, and let the stream expire `grace_ms` later."""
        try:
            with contextlib.suppress(LeaseLostError):  # then `close` finds the lease gone and writes nothing
                await self.flush()
            await self.lease.stream.close(run_id=self.run_id, grace_ms=grace_ms, end={"run_id": self.run_id})
        finally:
            self.lease.keeper.release(self.lease)

    async def _guarded(self, write: Awaitable[None]) -> None:
        try:
            await write
        except LeaseLostError:
            self.lease.lost = True
            raise
