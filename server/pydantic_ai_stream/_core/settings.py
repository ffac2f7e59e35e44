"""Settings (key prefix, lease timing, retention) that a `Runtime` carries and everything below it is given;
each field also reads its `PYDANTIC_AI_STREAM_*` environment variable. The published API's process-wide
instance lives with the other legacy names in `_runtime/compat.py`."""

from __future__ import annotations

from threading import Lock
from typing import Protocol

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .keys import ConversationKeys, SessionKeys, check_prefix

__all__ = ["Configured", "Settings"]

_lock = Lock()


class Settings(BaseSettings):
    """Key layout, lease timing and stream retention; every field is also an environment variable."""

    model_config = SettingsConfigDict(env_prefix="PYDANTIC_AI_STREAM_", validate_assignment=True)

    redis_prefix: str = "pyaix"
    """First segment of every key this package writes."""

    cluster_hash_tags: bool | None = None
    """Wrap `{prefix}:{scope_id}:{user_id}` in a hash tag; `None` turns it on for `RedisCluster` clients."""

    lease_ttl: float = Field(default=3.0, gt=0.1, le=3600)
    """Seconds a run's live flag survives without renewal: how fast a dead process is noticed."""

    lease_renew_interval: float = Field(default=1.0, gt=0.01, le=600)
    """Seconds between lease renewals (and cancel-flag checks when Pub/Sub misses one)."""

    stream_maxlen: int = Field(default=100_000, ge=100)
    """Approximate cap on entries per stream (`XADD MAXLEN ~`)."""

    stream_retention: int = Field(default=3600, ge=1)
    """Seconds a stream is kept after its run ends (and after its last write, if the run dies)."""

    max_queued_runs: int = Field(default=1000, ge=1)
    """Runs a scope may have waiting for a worker; beyond it a run is refused (`QueueFullError`)."""

    queue_wait: int = Field(default=3600, ge=1)
    """Seconds a run may wait for a worker (at most `stream_retention`); after that it is ended as lost. A durable
    run whose worker died or handed it back waits as long for the next one, counted from its last lease renewal."""

    input_wait: int = Field(default=86_400, ge=1)
    """Seconds a run may wait for answers to its deferred tool calls (approvals, external results); after that
    it ends with `error` `input expired`."""

    max_attempts: int = Field(default=5, ge=1, le=100)
    """Attempts of a queued run that may fail: after its worker dies mid-run another resumes it, until this
    many attempts died (then the run ends with `error` `run lost`). Attempts handed back on shutdown do not
    count: a run outlives any number of deploys."""

    def set_redis_prefix(self, prefix: str) -> None:
        """Set the first segment of every key (default `pyaix`)."""
        with _lock:
            self.redis_prefix = prefix

    def hash_tags(self, *, cluster: bool) -> bool:
        """Whether keys get Redis Cluster hash tags: `cluster_hash_tags`, or else whether the client is a cluster's."""
        return self.cluster_hash_tags if self.cluster_hash_tags is not None else cluster

    def session_keys(self, *, cluster: bool, scope_id: int, user_id: int, session_id: str) -> SessionKeys:
        """A session's keys under this prefix, for a client that is (`cluster`) a Redis Cluster's or not;
        raises `InvalidIdError` for unsafe ids, before any I/O."""
        return SessionKeys.build(
            prefix=self.redis_prefix,
            scope_id=scope_id,
            user_id=user_id,
            session_id=session_id,
            hash_tags=self.hash_tags(cluster=cluster),
        )

    def conversation_keys(self, *, cluster: bool, scope_id: int, user_id: int) -> ConversationKeys:
        """A user's conversation keys under this prefix (see `session_keys`)."""
        tags = self.hash_tags(cluster=cluster)
        return ConversationKeys.build(prefix=self.redis_prefix, scope_id=scope_id, user_id=user_id, hash_tags=tags)

    @field_validator("redis_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        return check_prefix(value)


class Configured(Protocol):
    """What carries settings (a `Runtime`), for code below it that takes its key prefix from it."""

    @property
    def settings(self) -> Settings: ...
