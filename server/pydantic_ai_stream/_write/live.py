"""`LiveRun`: the write side of one run: its lease on the session, its stream writer, its event mapper."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic_ai import CancellationToken
from pydantic_ai.messages import ModelMessage

from .._core.errors import LeaseLostError, RunExistsError, SessionBusyError
from .._core.events import EventMapper
from .._core.keys import SessionKeys, run_id_or_new
from .._core.names import EVENT, ORIGIN_PYDANTIC_AI
from .._durable.checkpoint import Checkpoint, decode_messages, encode_messages, saved_nodes
from .._runtime.runtime import Runtime
from .._store.redis import Held, OpenState, SessionStream
from .lease import Lease
from .writer import StreamWriter

__all__ = ["LiveRun"]

_T = TypeVar("_T")


@dataclass(eq=False, kw_only=True)
class LiveRun:
    """A run that holds its session: what it writes goes to the stream in order, fenced by its lease."""

    run_id: str
    lease_id: str
    """The live flag's value while this attempt holds the run: the run id, `<run id>:<attempt>` after the
    first (writes of an older attempt are refused)."""
    attempt: int = 1
    begin_event_id: str
    begin: Mapping[str, Any]
    """The body of the run's `begin` (its ids, and what its starter added, e.g. `user_prompt`)."""
    lease: Lease
    writer: StreamWriter
    mapper: EventMapper = field(default_factory=EventMapper)
    """Numbers the run's nodes and turns pydantic-ai events into bodies."""
    handing_back: bool = False
    """Its worker stops: the run is to be let go without an end, for another worker to resume."""
    checkpoint_ttl_ms: int | None = None
    """A durable run's (one from the run queue): how long its checkpoints are kept; `None`: not durable,
    never checkpointed."""
    kept: tuple[int, int] = (-1, 0)
    """The node and the number of messages of its last checkpoint."""

    @classmethod
    async def open(
        cls, runtime: Runtime, keys: SessionKeys, *, run_id: str | None = None, body: Mapping[str, Any] | None = None
    ) -> LiveRun:
        """Take the session's live flag and write `begin` (the ids, then `body`) to a fresh stream.

        Raises `SessionBusyError`, writing nothing, if another run of the session is live, and
        `RunExistsError` if `run_id` is the session's live run or its last one (a retry).
        """
        run_id = run_id_or_new(run_id)
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
    async def adopt(cls, runtime: Runtime, keys: SessionKeys, *, run_id: str, adopter: str = "") -> LiveRun | None:
        """Take over the queued run `run_id` (its `begin` is written): its flag becomes this process's lease.
        `None` if it is no longer queued (cancelled, expired, or another worker's). A retry with the same
        `adopter` (one worker's, for one job) after a lost reply gets the run it took."""
        stream = runtime.stream(keys)
        lease_ms, wait_ms = runtime.leases.lease_ms, runtime.queue.wait_ms
        begin = await cls._leased(
            runtime, lambda: stream.adopt(run_id=run_id, lease_ms=lease_ms, wait_ms=wait_ms, adopter=adopter)
        )
        if begin is None:
            return None
        return cls._held(
            runtime, stream, run_id=run_id, begin_event_id=begin.id, begin=begin.body, checkpoint_ttl_ms=wait_ms
        )

    @classmethod
    async def recover(cls, runtime: Runtime, keys: SessionKeys, *, run_id: str) -> LiveRun | Held | None:
        """Take over the durable run `run_id` whose worker's lease lapsed, as its next attempt (a `resumed`
        event marks where its stream goes on; a run cancelled meanwhile is taken over cancelled, to be
        ended). `Held` if a worker still holds it; `None` if there is nothing to take over."""
        stream = runtime.stream(keys)
        lease_ms, wait_ms = runtime.leases.lease_ms, runtime.queue.wait_ms
        attempts = runtime.settings.max_attempts
        recovered = await cls._leased(
            runtime,
            lambda: stream.recover(run_id=run_id, lease_ms=lease_ms, max_attempts=attempts, wait_ms=wait_ms),
        )
        if recovered is None or isinstance(recovered, Held):
            return recovered
        live = cls._held(
            runtime,
            stream,
            run_id=run_id,
            begin_event_id=recovered.begin.id,
            begin=recovered.begin.body,
            lease_id=recovered.token,
            attempt=recovered.attempt,
            last_id=recovered.marker_id,
            checkpoint_ttl_ms=wait_ms,
        )
        if recovered.cancelled:
            live.lease.cancel()
        return live

    @staticmethod
    async def _leased(runtime: Runtime, take: Callable[[], Awaitable[_T]]) -> _T:
        """What `take` (a script that takes a lease) took, the lease keeper being ready to hold it (`None` or
        `Held`: it took nothing)."""
        keeper = runtime.leases
        await keeper.ready(timeout=runtime.settings.lease_ttl)
        try:
            taken = await take()
        except BaseException:
            keeper.release(None)
            raise
        if taken is None or isinstance(taken, Held):
            keeper.release(None)
        return taken

    @classmethod
    def _held(
        cls,
        runtime: Runtime,
        stream: SessionStream,
        *,
        run_id: str,
        begin_event_id: str,
        begin: Mapping[str, Any],
        lease_id: str | None = None,
        attempt: int = 1,
        last_id: str | None = None,
        checkpoint_ttl_ms: int | None = None,
    ) -> LiveRun:
        """The run whose lease was just taken, renewed by the runtime's keeper from now on."""
        lease_id = lease_id or run_id
        lease = Lease(stream=stream, run_id=lease_id, keeper=runtime.leases, durable=checkpoint_ttl_ms is not None)
        writer = StreamWriter(
            stream=stream, run_id=lease_id, combiner=runtime.writes, last_id=last_id or begin_event_id
        )
        runtime.leases.hold(lease)
        return cls(
            run_id=run_id,
            lease_id=lease_id,
            attempt=attempt,
            begin_event_id=begin_event_id,
            begin=begin,
            lease=lease,
            writer=writer,
            checkpoint_ttl_ms=checkpoint_ttl_ms,
        )

    @property
    def token(self) -> CancellationToken:
        """The pydantic-ai token a cancel of this run (from any process) fires."""
        return self.lease.token

    @property
    def durable(self) -> bool:
        """Whether the run came from the run queue: checkpointed, resumed by another worker if this one dies."""
        return self.checkpoint_ttl_ms is not None

    @property
    def lost(self) -> bool:
        """Whether the run lost its live flag (it must stop without saving)."""
        return self.lease.lost

    async def rolled_back(self) -> bool:
        """Whether the run was cancelled to be rolled back: its messages are not to be saved."""
        return await self.lease.stream.rolled_back(self.lease_id)

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

    async def checkpoint(self, idx: int, messages: Sequence[ModelMessage]) -> None:
        """Keep a durable run's progress: it would resume from node `idx` with `messages` (the run's, after its
        session's history). What it wrote so far is in the stream first; raises `LeaseLostError` if the
        lease is lost (the checkpoint is refused). Does nothing for a run that is not durable."""
        ttl_ms = self.checkpoint_ttl_ms
        if ttl_ms is None or self.kept == (idx, len(messages)):
            return
        await self.flush()
        kept = min(self.kept[1], len(messages))
        done = await self.lease.stream.checkpoint(
            token=self.lease_id,
            run_id=self.run_id,
            idx=idx,
            kept=kept,
            messages=encode_messages(messages[kept:]),
            ttl_ms=ttl_ms,
        )
        if not done:
            self.lease.lost = True
            raise LeaseLostError(f"run {self.lease_id} no longer holds its session: its checkpoint was refused")
        self.kept = (idx, len(messages))

    async def resume(self) -> Checkpoint | None:
        """Where a resumed run goes on: its last checkpoint, or `None` (a first attempt, or none was taken:
        it starts over). When the run stopped while tools ran, their node is redone from its response,
        re-sent complete here; node numbers go on from the checkpoint's."""
        if self.attempt == 1:
            return None
        loaded = await self.lease.stream.load_checkpoint(self.run_id)
        if loaded is None:
            return None
        idx, items = loaded
        checkpoint = Checkpoint(idx=idx, messages=decode_messages(items))
        self.kept = (idx, len(checkpoint.messages))
        self.mapper.idx = idx - 1
        if (response := checkpoint.interrupted) is not None and not self.token.cancelled:  # not redone: it ends
            for body in self.mapper.replay(idx, response):
                await self.add(EVENT, ORIGIN_PYDANTIC_AI, body)
        return checkpoint

    async def replay_saved(self, history: Sequence[ModelMessage]) -> None:
        """A run its last worker saved, then stopped before its `end`: its nodes from the `resumed` marker's
        (which replaced them for listeners) streamed again, complete, from the saved conversation `history`."""
        loaded = await self.lease.stream.load_checkpoint(self.run_id)
        start = loaded[0] if loaded is not None else 0
        for idx, (response, answer) in enumerate(saved_nodes(history, self.run_id)):
            if idx >= start:
                for body in self.mapper.replay(idx, response, answer):
                    await self.add(EVENT, ORIGIN_PYDANTIC_AI, body)

    async def flush(self) -> None:
        """Wait until every entry added so far is in Redis."""
        await self._guarded(self.writer.flush())

    async def close(self, *, grace_ms: int) -> None:
        """Write `end`, release the live flag, and let the stream expire `grace_ms` later; when
        `handing_back`, release the flag only (the events so far written), for another worker to resume."""
        try:
            with contextlib.suppress(LeaseLostError):  # then `close` finds the lease gone and writes nothing
                await self.flush()
            if self.handing_back and self.checkpoint_ttl_ms is not None:
                wait_ms = self.checkpoint_ttl_ms
                await self.lease.stream.hand_back(token=self.lease_id, run_id=self.run_id, wait_ms=wait_ms)
            else:
                await self.lease.stream.close(run_id=self.lease_id, grace_ms=grace_ms, end={"run_id": self.run_id})
        finally:
            self.lease.keeper.release(self.lease)

    async def _guarded(self, write: Awaitable[None]) -> None:
        try:
            await write
        except LeaseLostError:
            self.lease.lost = True
            raise
