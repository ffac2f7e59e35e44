"""`LiveRun`: the write side of one run: its lease on the session, its stream writer, its event mapper."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pydantic_ai import CancellationToken
from pydantic_ai.messages import ModelMessage

from .._core.deferred import InputCall, input_required
from .._core.errors import LeaseLostError, RunExistsError, SessionBusyError
from .._core.events import EventMapper
from .._core.keys import SessionKeys, run_id_or_new
from .._core.messages import encode_messages
from .._core.names import ERROR, EVENT, ORIGIN_PYDANTIC_AI, ORIGIN_STREAM
from .._core.settings import Settings
from .._store.redis import dump_body
from .._store.results import Held, LeaseState, OpenState
from .._store.stream import SessionStream
from .lease import Lease, LeaseKeeper
from .writer import StreamWriter, WriteCombiner

__all__ = ["LiveRun", "RunHost"]

_T = TypeVar("_T")


class RunHost(Protocol):
    """What a run's write side is opened with: its owner's (the `Runtime`'s, a layer above) lease keeper,
    write batching, streams and settings."""

    @property
    def settings(self) -> Settings: ...

    @property
    def leases(self) -> LeaseKeeper: ...

    @property
    def writes(self) -> WriteCombiner: ...

    def stream(self, keys: SessionKeys) -> SessionStream: ...


@dataclass(frozen=True, kw_only=True)
class _Waiting:
    calls: list[InputCall]
    deadline_ms: int
    waited: int
    body: str
    """Its `input_required` event's (JSON): written with the wait, so whoever reads it can answer at once."""


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
    job: Mapping[str, str] | None = None
    """A durable run's job (its fields): queued again to go on once a wait for input is answered."""
    continues: bool = False
    """The run goes on after a wait for input that was answered (its answers are in the session's `input`)."""
    waiting: _Waiting | None = None
    """The run stopped for input (`wait_for_input`): `close` lets it wait instead of ending it."""

    @classmethod
    async def open(
        cls, host: RunHost, keys: SessionKeys, *, run_id: str | None = None, body: Mapping[str, Any] | None = None
    ) -> LiveRun:
        """Take the session's live flag and write `begin` (the ids, then `body`) to a fresh stream.

        Raises `SessionBusyError`, writing nothing, if another run of the session is live, and
        `RunExistsError` if `run_id` is the session's live run or its last one (a retry).
        """
        run_id = run_id_or_new(run_id)
        stream = host.stream(keys)
        keeper = host.leases
        # A Redis that cannot answer within a lease's lifetime could not keep the run's lease either.
        await keeper.ready(timeout=host.settings.lease_ttl)
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
        return cls._held(host, stream, run_id=run_id, begin_event_id=begin_event_id, begin=begin)

    @classmethod
    async def adopt(cls, host: RunHost, keys: SessionKeys, *, run_id: str, adopter: str = "") -> LiveRun | None:
        """Take over the queued run `run_id` (its `begin` is written): its flag becomes this process's lease.
        `None` if it is no longer queued (cancelled, expired, or another worker's). A retry with the same
        `adopter` (one worker's, for one job) after a lost reply gets the run it took."""
        stream = host.stream(keys)
        lease_ms, wait_ms = host.leases.lease_ms, host.leases.wait_ms
        adopted = await cls._leased(
            host, lambda: stream.adopt(run_id=run_id, lease_ms=lease_ms, wait_ms=wait_ms, adopter=adopter)
        )
        if adopted is None:
            return None
        begin, last_id, continues = adopted
        live = cls._held(
            host,
            stream,
            run_id=run_id,
            begin_event_id=begin.id,
            begin=begin.body,
            last_id=last_id,
            checkpoint_ttl_ms=wait_ms,
        )
        live.continues = continues
        return live

    @classmethod
    async def recover(cls, host: RunHost, keys: SessionKeys, *, run_id: str) -> LiveRun | Held | None:
        """Take over the durable run `run_id` whose worker's lease lapsed, as its next attempt (a `resumed`
        event marks where its stream goes on; a run cancelled meanwhile is taken over cancelled, to be
        ended). `Held` if a worker still holds it; `None` if there is nothing to take over."""
        stream = host.stream(keys)
        lease_ms, wait_ms = host.leases.lease_ms, host.leases.wait_ms
        attempts = host.settings.max_attempts
        recovered = await cls._leased(
            host,
            lambda: stream.recover(run_id=run_id, lease_ms=lease_ms, max_attempts=attempts, wait_ms=wait_ms),
        )
        if recovered is None or isinstance(recovered, Held):
            return recovered
        live = cls._held(
            host,
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
    async def _leased(host: RunHost, take: Callable[[], Awaitable[_T]]) -> _T:
        """What `take` (a script that takes a lease) took, the lease keeper being ready to hold it (`None` or
        `Held`: it took nothing)."""
        keeper = host.leases
        await keeper.ready(timeout=host.settings.lease_ttl)
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
        host: RunHost,
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
        """The run whose lease was just taken, renewed by its host's keeper from now on."""
        lease_id = lease_id or run_id
        lease = Lease(stream=stream, run_id=lease_id, keeper=host.leases, durable=checkpoint_ttl_ms is not None)
        writer = StreamWriter(stream=stream, run_id=lease_id, combiner=host.writes, last_id=last_id or begin_event_id)
        host.leases.hold(lease)
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
        try:
            if self.writer.queue(type, origin, body):  # no await per entry unless too much waits
                await self.writer.flush()
        except LeaseLostError:
            self.lease.lost = True
            raise

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

    async def wait_for_input(self, calls: list[InputCall], *, deadline_ms: int, waited: int) -> None:
        """`input_required` for `calls` (of the current node): a durable run writes it as it closes, in one step with
        its wait for their answers in Redis (held by no process) until `deadline_ms`, so whoever reads the event can
        answer at once; a run that is not durable writes it now and ends as any. `waited`: the messages its
        session's stored conversation holds once this part of the run is saved."""
        body = input_required(max(self.mapper.idx, 0), calls, deadline_ms)
        if self.durable and self.job is not None:
            self.waiting = _Waiting(calls=calls, deadline_ms=deadline_ms, waited=waited, body=dump_body(body))
        else:
            await self.add(EVENT, ORIGIN_STREAM, body)

    async def flush(self) -> None:
        """Wait until every entry added so far is in Redis."""
        await self._guarded(self.writer.flush())

    async def close(self, *, grace_ms: int) -> bool:
        """Write `end`, release the live flag, and let the stream expire `grace_ms` later; when
        `handing_back`, release the flag only (the events so far written), for another worker to resume.
        Whether a run may wait behind this one (`False`: none does, nothing to start)."""
        try:
            with contextlib.suppress(LeaseLostError):  # then `close` finds the lease gone and writes nothing
                await self.flush()
            if self.handing_back and self.checkpoint_ttl_ms is not None:
                wait_ms = self.checkpoint_ttl_ms
                await self.lease.stream.hand_back(token=self.lease_id, run_id=self.run_id, wait_ms=wait_ms)
                return True
            if self.waiting is not None and self.job is not None:
                wait = self.waiting
                state = await self.lease.stream.await_input(
                    token=self.lease_id,
                    run_id=self.run_id,
                    idx=max(self.mapper.idx, 0),
                    deadline_ms=wait.deadline_ms,
                    waited=wait.waited,
                    job=self.job,
                    calls=wait.calls,
                    body=wait.body,
                )
                if state is LeaseState.LOST:  # another attempt holds the run (and its job) now
                    self.lease.lost = True
                    return False
                if state is LeaseState.HELD:
                    return False  # it waits, held by nobody: nothing to start behind it
                # A cancel came as it stopped: it ends cancelled, its calls left for the next run to close.
                self.waiting = None
                with contextlib.suppress(LeaseLostError):
                    await self.add(ERROR, ORIGIN_STREAM, {"msg": "canceled"})
                    await self.flush()
            end = {"run_id": self.run_id}
            _, waiting = await self.lease.stream.close_and_peek(run_id=self.lease_id, grace_ms=grace_ms, end=end)
            return waiting
        finally:
            self.lease.keeper.release(self.lease)

    async def _guarded(self, write: Awaitable[None]) -> None:
        try:
            await write
        except LeaseLostError:
            self.lease.lost = True
            raise
