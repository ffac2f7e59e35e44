"""One session's side of Redis: its event stream, live flag (the run's lease) and entry in the active set.

Writes that must hold the run's lease are Lua scripts that check the live flag first (a fencing token), so a
run whose lease has expired can never write after the `end` someone else wrote.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .._core.cursor import Cursor
from .._core.deferred import InputCall, InputWait, ToolAnswer
from .._core.entry import Entry, StreamBounds, decode, entry_type
from .._core.errors import CursorExpiredError
from .._core.keys import SessionKeys
from .._core.names import CANCEL_MARK, INPUT_EXPIRED, RUN_LOST
from .redis import AsyncRedis, dump_body, xread_entries_by_key
from .results import CancelState, Enqueue, Held, LeaseState, OpenState, Recovered, RespondState, WaitState
from .scripts import session, waiting

__all__ = ["SessionStream"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStream:
    """The Redis side of one session: its event stream, live flag and entry in the active set."""

    redis: AsyncRedis
    keys: SessionKeys
    maxlen: int
    retention_ms: int

    async def open(
        self,
        *,
        run_id: str,
        lease_ms: int,
        begin: Mapping[str, Any],
        nonce: str,
        queued: bool = False,
        enqueue: Enqueue | None = None,
    ) -> tuple[OpenState, str]:
        """Take the live flag and start a fresh stream with `begin` (which must start with this session's
        and run's ids); returns what it found and the run's `begin` id (`""` when `BUSY` or `FULL`).

        `nonce`, unique to this start, lets a copy of the call re-sent by a retrying client see it opened.
        `queued`: the flag says the run waits for a worker (`adopt`), and lives `lease_ms` meanwhile;
        `enqueue`: its job is added to the run queue in the same step (not on a Redis Cluster).
        """
        return await session.open_run(
            self.redis,
            self.keys,
            run_id=run_id,
            lease_ms=lease_ms,
            now_ms=int(time.time() * 1000),
            maxlen=self.maxlen,
            retention_ms=self.retention_ms,
            begin=dump_body(begin),
            own=dump_body({"session_id": self.keys.session_id, "run_id": run_id})[:-1],
            nonce=nonce,
            queued=queued,
            enqueue=enqueue,
        )

    async def adopt(
        self, *, run_id: str, lease_ms: int, wait_ms: int, adopter: str = ""
    ) -> tuple[Entry, str, bool] | None:
        """Take the flag of the queued run `run_id` as a `lease_ms` lease; its `begin` entry, the stream's last id
        and whether it goes on after its answered wait for input, or `None` if it is no longer queued (cancelled,
        expired, or adopted by another worker). `adopter`,
        unique to one worker and job, lets a re-sent copy of the call (its reply lost) find the run its own."""
        return await session.adopt(
            self.redis, self.keys, run_id=run_id, lease_ms=lease_ms, wait_ms=wait_ms, adopter=adopter
        )

    async def recover(self, *, run_id: str, lease_ms: int, max_attempts: int, wait_ms: int) -> Recovered | Held | None:
        """Take over the durable run `run_id` whose worker's lease lapsed, as its next attempt; `Held` if a
        worker still holds it; `None` if there is nothing to take over (ended, or out of attempts: then
        ended as lost)."""
        return await session.recover(
            self.redis,
            self.keys,
            run_id=run_id,
            lease_ms=lease_ms,
            max_attempts=max_attempts,
            maxlen=self.maxlen,
            retention_ms=self.retention_ms,
            wait_ms=wait_ms,
            error=dump_body({"msg": RUN_LOST, "reason": f"{max_attempts} attempts failed"}),
        )

    async def close(self, *, run_id: str, grace_ms: int, end: Mapping[str, Any]) -> bool:
        """Write `end`, release the live flag and keep the stream `grace_ms`; `False` if the lease was lost."""
        return await session.close(
            self.redis, self.keys, token=run_id, maxlen=self.maxlen, grace_ms=grace_ms, end=dump_body(end)
        )

    async def close_and_peek(self, *, run_id: str, grace_ms: int, end: Mapping[str, Any]) -> tuple[bool, bool]:
        """`close`, and whether a run waits behind the session's now (maybe, where that costs a round trip)."""
        return await session.close_and_peek(
            self.redis, self.keys, token=run_id, maxlen=self.maxlen, grace_ms=grace_ms, end=dump_body(end)
        )

    async def hand_back(self, *, token: str, run_id: str, wait_ms: int) -> bool:
        """Let go of the durable run `run_id` whose lease `token` holds, without ending it: another worker
        resumes it within `wait_ms` (this attempt not counted against `max_attempts`). `False` if the lease
        was no longer held."""
        state = await session.hand_back(self.redis, self.keys, token=token, run_id=run_id, wait_ms=wait_ms)
        return state is LeaseState.HELD

    async def checkpoint(
        self, *, token: str, run_id: str, idx: int, kept: int, messages: Sequence[bytes], ttl_ms: int
    ) -> bool:
        """Keep the durable run's progress: it resumes from node `idx` with the messages of its last
        checkpoint up to `kept`, then `messages` (each one message's JSON). `False` if the lease `token`
        is not held (the checkpoint is refused)."""
        state = await session.checkpoint(
            self.redis, self.keys, token=token, run_id=run_id, idx=idx, ttl_ms=ttl_ms, kept=kept, messages=messages
        )
        return state is LeaseState.HELD

    async def load_checkpoint(self, run_id: str) -> tuple[int, list[bytes]] | None:
        """The node the run resumes from and its messages (each one's JSON), or `None` without a checkpoint."""
        return await session.load_checkpoint(self.redis, self.keys, run_id=run_id)

    async def store_attachments(self, *, run_id: str, attachments: bytes, ttl_ms: int) -> bool:
        """Keep the queued run's attachments (`encode_attachments`) for `ttl_ms`, until a worker adopts it; `False`
        if they were kept already (a retried submit: the first copy stays)."""
        return bool(await self.redis.set(self.keys.attachments(run_id), attachments, nx=True, px=ttl_ms))

    async def load_attachments(self, run_id: str) -> bytes | None:
        """The attachments of the run `run_id` as `adopt` kept them (`None`: it had none, or they expired)."""
        stored = await self.redis.hget(self.keys.checkpoint, f"attachments:{run_id}")
        return stored.encode() if isinstance(stored, str) else stored

    async def drop_attachments(self, run_id: str) -> None:
        """The run `run_id` will not start (refused, or ended before a worker adopted it): its attachments go."""
        await self.redis.delete(self.keys.attachments(run_id))

    async def await_input(
        self,
        *,
        token: str,
        run_id: str,
        idx: int,
        deadline_ms: int,
        waited: int,
        job: Mapping[str, str],
        calls: Sequence[InputCall],
        body: str,
    ) -> LeaseState:
        """Let go of the durable run `run_id` (whose lease `token` holds) while it waits for answers to `calls`
        (of node `idx`) until `deadline_ms`; `waited`: the messages the stored conversation holds now; `job`: the
        fields of the job that goes on once answered; `body`: its `input_required` event's (JSON), written with the
        wait. `HELD` if it waits now, `CANCEL_REQUESTED` if a cancel came first, `LOST` if the lease was lost (both:
        nothing written)."""
        wait_ms = max(deadline_ms - int(time.time() * 1000), 1)
        return await waiting.await_input(
            self.redis,
            self.keys,
            token=token,
            run_id=run_id,
            wait_ms=wait_ms,
            keep_ms=wait_ms + self.retention_ms,
            idx=idx,
            deadline_ms=deadline_ms,
            waited=waited,
            job=job,
            maxlen=self.maxlen,
            body=body,
            calls=[(call["tool_call_id"], call["tool_name"], call["kind"]) for call in calls],
        )

    async def respond(
        self, *, run_id: str, answers: Sequence[ToolAnswer], wait_ms: int, enqueue: Enqueue | None
    ) -> tuple[RespondState, list[str]]:
        """Answer calls the run `run_id` waits on (see `respond.lua`); once all have an answer, the run is queued
        to go on (its job added in the same step with `enqueue`, else by the caller), for `wait_ms` at most."""
        return await waiting.respond(
            self.redis,
            self.keys,
            run_id=run_id,
            wait_ms=wait_ms,
            keep_ms=wait_ms + self.retention_ms,
            maxlen=self.maxlen,
            retention_ms=self.retention_ms,
            expired=EXPIRED_BODY,
            answers=[(a.tool_call_id, a.is_approval, a.stored()) for a in answers],
            enqueue=enqueue,
        )

    async def load_input(self, run_id: str) -> InputWait | None:
        """The wait of the run `run_id` with its answers, or `None` if it did not wait."""
        fields = await waiting.load_input(self.redis, self.keys)
        if fields.get("run") != run_id:
            return None
        tools = {k[5:]: json.loads(v)["tool_name"] for k, v in fields.items() if k.startswith("call:")}
        answers = {k[7:]: v for k, v in fields.items() if k.startswith("answer:")}
        return InputWait(idx=int(fields["idx"]), waited=int(fields["waited"]), tools=tools, answers=answers)

    async def rolled_back_wait(self) -> str | None:
        """The id of the run that waited for input and was cancelled to be rolled back (its messages, saved when
        it began to wait, are to be dropped), or `None`."""
        state, run = await self.redis.hmget(self.keys.input, ["state", "run"])
        return decode(run) if state is not None and decode(state) == "rolled_back" and run is not None else None

    async def wait_behind(self, *, run_id: str, run: Mapping[str, Any], ttl_ms: int, first: bool = False) -> WaitState:
        """Put `run` (JSON with its `run_id`) behind the session's run (`first`: before the runs waiting there):
        `WAITING` if it waits now, `ALREADY` if it already did, `NO_RUN` if the session has no run to wait for."""
        return await session.wait_behind(
            self.redis, self.keys, run_id=run_id, run=dump_body(run), ttl_ms=ttl_ms, first=first
        )

    async def first_waiting(self) -> str | None:
        """The first run waiting behind the session's run (its JSON), or `None`."""
        item = await self.redis.lindex(self.keys.waiting, 0)
        return None if item is None else decode(item)

    async def started_waiting(self, item: str) -> None:
        """The waiting run `item` (as `first_waiting` gave it) started: it waits no more."""
        await self.redis.lrem(self.keys.waiting, 1, item)

    async def renew(self, *, run_id: str, lease_ms: int, wait_ms: int, durable: bool = False) -> LeaseState:
        """Extend the lease of `run_id` (see `renew_many`); says whether it is still held and whether a cancel
        was asked."""
        ((state, _),) = await session.renew(
            self.redis, [(self.keys, run_id, durable)], lease_ms=lease_ms, retention_ms=self.retention_ms,
            wait_ms=wait_ms,
        )  # fmt: skip
        return state

    async def cancel(
        self, channel: str, *, rollback: bool = False, run_id: str | None = None
    ) -> tuple[CancelState, str]:
        """Ask the live run to stop (a queued one is ended at once; a durable one whose worker died is ended by
        the worker that takes it over); what it found, and the run's id.

        `rollback`: the run's messages are not to be saved (see `rolled_back`). `run_id`: only if the live
        or queued run is that one (`ALREADY` if it was cancelled before: a retry's answer).
        """
        return await session.cancel(
            self.redis,
            self.keys,
            channel=channel,
            maxlen=self.maxlen,
            retention_ms=self.retention_ms,
            error=dump_body({"msg": "canceled"}),
            rollback=rollback,
            run_id=run_id or "",
        )

    async def rolled_back(self, run_id: str) -> bool:
        """Whether `run_id` was cancelled to be rolled back (so it must not save its messages)."""
        value = await self.redis.get(self.keys.rollback)
        return value is not None and decode(value) == run_id

    async def is_live(self) -> bool:
        """Whether a run holds the live flag and has not been asked to cancel."""
        value = await self.redis.get(self.keys.live)
        return value is not None and not decode(value).startswith(CANCEL_MARK)

    async def reap(self, *, grace_ms: int) -> bool:
        """End the stream of a run that died without writing `end`; `True` if it did."""
        (lives_ms,) = await session.reap(
            self.redis, [self.keys], maxlen=self.maxlen, grace_ms=grace_ms, error=LOST_BODY, expired=EXPIRED_BODY
        )
        return lives_ms is None

    async def read(self, after: str, *, block_ms: int | None, count: int = 1000) -> list[Entry]:
        """Entries strictly after `after`, waiting up to `block_ms` for the first one."""
        reply = await self.redis.xread({self.keys.stream: after}, count=count, block=block_ms)
        by_key = xread_entries_by_key(reply)
        return [Entry.from_redis(entry_id, fields) for _, entries in by_key for entry_id, fields in entries]

    async def read_range(self, *, after: str, until: str = "+", count: int) -> list[Entry]:
        """Entries in (`after`, `until`], at most `count`; unlike `XREAD`, never silently past a trim.

        Raises `CursorExpiredError` if entries after `after` (`0-0`: the run's `begin`) may have been trimmed.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrange(self.keys.stream, min=f"({after}", max=until, count=count)
            pipe.xrange(self.keys.stream, count=1)  # after the read: a trim before it shows here
            page, oldest = await pipe.execute()
        if oldest and Cursor(after).trimmed_past(oldest=decode(oldest[0][0]), oldest_type=entry_type(oldest[0][1])):
            raise CursorExpiredError(after, decode(oldest[0][0]))
        return [Entry.from_redis(entry_id, fields) for entry_id, fields in page]

    async def ends(self) -> tuple[Entry, Entry] | None:
        """The oldest and the newest entry; `None` if there is no stream."""
        ends = await self._ends()
        return None if ends is None else (Entry.from_redis(*ends[0]), Entry.from_redis(*ends[1]))

    async def read_back(self, *, before: str, count: int) -> list[Entry]:
        """Up to `count` entries before `before`, newest first."""
        page: Any = await self.redis.xrevrange(self.keys.stream, max=f"({before}", count=count)
        return [Entry.from_redis(entry_id, fields) for entry_id, fields in page]

    async def bounds(self) -> StreamBounds | None:
        """The oldest and newest entries' ids and types (their bodies left unparsed); `None` if there is no
        stream."""
        ends = await self._ends()
        if ends is None:
            return None
        (oldest, oldest_fields), (newest, newest_fields) = ends
        return StreamBounds(oldest=decode(oldest), oldest_type=entry_type(oldest_fields),
                            newest=decode(newest), newest_type=entry_type(newest_fields))  # fmt: skip

    async def _ends(self) -> tuple[Any, Any] | None:
        """The oldest and the newest entry as Redis gives them, `(id, fields)`; `None` if there is no stream."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xrange(self.keys.stream, count=1)
            pipe.xrevrange(self.keys.stream, count=1)
            oldest, newest = await pipe.execute()
        return (oldest[0], newest[0]) if oldest and newest else None


LOST_BODY = dump_body({"msg": RUN_LOST, "reason": "lease expired"})
"""The body of the `error` that ends a run whose process died (its lease expired)."""
EXPIRED_BODY = dump_body({"msg": INPUT_EXPIRED})
"""The body of the `error` that ends a run whose wait for input passed its deadline."""
