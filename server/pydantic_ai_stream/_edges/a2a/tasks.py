"""A2A task records in Redis: which session, agent and `begin` entry a task (one run) has, per user.

A task's id is its run's id and its context is the run's session; what it output is in the session's stream,
so a record holds only where to read it, and the final state once a reader saw the run's `end`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..._core.entry import decode
from ..._core.keys import TaskKeys
from ..._store.redis import AsyncRedis

__all__ = ["TaskRecord", "TaskRecords", "TaskState"]

TaskState = Literal["", "completed", "failed", "canceled"]
"""A record's final state; `""` until a reader saw the run end."""


@dataclass(frozen=True, kw_only=True)
class TaskRecord:
    """One A2A task: a run of `agent` on session `context_id`."""

    task_id: str
    """The run's id."""
    context_id: str
    """The session's id."""
    agent: str
    begin_event_id: str
    """The id of the run's `begin` entry in the session's stream: its events follow it."""
    created_ms: int
    state: TaskState = ""
    error: str = ""
    """The message of a failed run's error."""
    text: str = ""
    """The run's text once it ended: the session's stream holds only its latest run."""
    message: str = ""
    """The message that started the task, as JSON (the task's history)."""


@dataclass(frozen=True, kw_only=True)
class TaskRecords:
    """One user's task records (`TaskKeys`), each kept for `retention_ms` after it was written or finished."""

    redis: AsyncRedis
    keys: TaskKeys
    retention_ms: int

    async def add(self, record: TaskRecord) -> None:
        """Keep `record` (and forget the user's tasks older than the retention from the index)."""
        key = self.keys.task(record.task_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(
                key,
                mapping={
                    "context_id": record.context_id,
                    "agent": record.agent,
                    "begin_event_id": record.begin_event_id,
                    "created_ms": record.created_ms,
                    "state": record.state,
                    "error": record.error,
                    "message": record.message,
                },
            )
            pipe.pexpire(key, self.retention_ms)
            pipe.zadd(self.keys.tasks, {record.task_id: record.created_ms})
            pipe.zremrangebyscore(self.keys.tasks, "-inf", f"({record.created_ms - self.retention_ms}")
            pipe.pexpire(self.keys.tasks, self.retention_ms)
            await pipe.execute()

    async def get(self, task_id: str) -> TaskRecord | None:
        """The record of `task_id`, or `None` (never written, expired, or another user's)."""
        return _record(task_id, await self.redis.hgetall(self.keys.task(task_id)))

    async def get_many(self, task_ids: Sequence[str]) -> list[TaskRecord | None]:
        """The records of `task_ids` (`None` for each one gone), in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.hgetall(self.keys.task(task_id))
            replies = await pipe.execute()
        return [_record(task_id, fields) for task_id, fields in zip(task_ids, replies, strict=True)]

    async def finish(self, task_id: str, state: TaskState, *, error: str = "", text: str = "") -> None:
        """Note the final state and text of `task_id` (if its record still exists); kept a retention longer."""
        key = self.keys.task(task_id)
        if await self.redis.exists(key):
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping={"state": state, "error": error, "text": text})
                pipe.pexpire(key, self.retention_ms)
                await pipe.execute()

    async def delete(self, task_id: str) -> None:
        """Forget `task_id`."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(self.keys.task(task_id))
            pipe.zrem(self.keys.tasks, task_id)
            await pipe.execute()

    async def ids(self, *, offset: int = 0, limit: int = 50) -> tuple[list[str], int]:
        """Task ids newest first, `limit` from `offset`, and how many the index holds."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(self.keys.tasks, offset, offset + limit - 1)
            pipe.zcard(self.keys.tasks)
            ids, total = await pipe.execute()
        return [decode(i) for i in ids], int(total)


def _record(task_id: str, fields: Mapping[Any, Any]) -> TaskRecord | None:
    """A record as its hash holds it (`None`: no hash)."""
    if not fields:
        return None
    values = {decode(k): decode(v) for k, v in fields.items()}
    state = values.get("state", "")
    return TaskRecord(
        task_id=task_id,
        context_id=values["context_id"],
        agent=values["agent"],
        begin_event_id=values["begin_event_id"],
        created_ms=int(values["created_ms"]),
        state=state if state in ("completed", "failed", "canceled") else "",  # type: ignore[arg-type]
        error=values.get("error", ""),
        text=values.get("text", ""),
        message=values.get("message", ""),
    )


def now_ms() -> int:
    """Wall-clock milliseconds, as task records store them."""
    return int(time.time() * 1000)
