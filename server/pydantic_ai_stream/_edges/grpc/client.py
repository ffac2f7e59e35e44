"""The gRPC client (public as `pydantic_ai_stream.client`): `StreamClient`, whose `listen` resumes after drops,
and `Transcript`, the one fold (`_core.fold`) of a run's gRPC events into its output. The CLI talks through it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from google.protobuf import json_format, struct_pb2

from ..._core.fold import Fold, TranscriptNode
from ...v1 import stream_pb2 as pb
from ...v1 import stream_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # not imported when running: the client starts without pydantic-ai
    from pydantic_ai.messages import AudioUrl, BinaryContent, DocumentUrl, ImageUrl, VideoUrl

__all__ = [
    "Attachable",
    "StreamClient",
    "Transcript",
    "TranscriptNode",
    "TranscriptPart",
    "approve",
    "attachment_to_proto",
    "deny",
    "event_body",
    "external_result",
    "input_calls",
    "retry",
]

# Codes after which a Listen is resumed from its last event id instead of failing.
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})

MAX_BATCH_EVENTS = 256
"""Most events a `listen` asks the server to send in one response when it is behind (yielded one by one)."""


class StreamClient:
    """Talks to a pydantic-ai-stream server: `run`, `listen`, `cancel`, `list_active`, `respond`."""

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        client_certificate: tuple[bytes, bytes] | None = None,
        tls: bool | None = None,
    ) -> None:
        """`token` goes as `authorization: Bearer <token>`; TLS when certificates are given or `tls=True`."""
        if tls or root_certificates is not None or client_certificate is not None:
            key, chain = client_certificate or (None, None)
            credentials = grpc.ssl_channel_credentials(root_certificates, private_key=key, certificate_chain=chain)
            self.channel = grpc.aio.secure_channel(target, credentials)
        else:
            self.channel = grpc.aio.insecure_channel(target)
        self.stub = pb_grpc.AgentStreamServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._unbatched = False
        """The server refused `max_batch_events` (it is older): Listen without it."""

    async def __aenter__(self) -> StreamClient:
        return self

    async def __aexit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def run(
        self,
        agent: str,
        session_id: str,
        prompt: str,
        *,
        run_id: str = "",
        model_settings: Mapping[str, Any] | None = None,
        if_busy: pb.BusyPolicy.ValueType = pb.BUSY_POLICY_REJECT,
        context: Mapping[str, Any] | None = None,
        attachments: Sequence[Attachable] = (),
        timeout: float | None = 30.0,
    ) -> pb.RunResponse:
        """Start a run; returns once its `begin` is in the stream (or, `waiting`, once it waits behind the
        session's run: `if_busy=BUSY_POLICY_ENQUEUE`). Retrying with the same `run_id` is safe.

        `context` (JSON) goes to the hosted agent's deps (`ctx.deps.context`); `attachments` (pydantic-ai's
        `BinaryContent`, `ImageUrl`, `DocumentUrl`, `AudioUrl`, `VideoUrl`, or `pb.Attachment`s) follow the
        prompt's text in the user prompt."""
        request = pb.RunRequest(
            agent=agent,
            session_id=session_id,
            prompt=prompt,
            run_id=run_id,
            model_settings=_struct(model_settings),
            if_busy=if_busy,
            context=_struct(context),
            attachments=[attachment_to_proto(attachment) for attachment in attachments],
        )
        response: pb.RunResponse = await self.stub.Run(request, metadata=self.metadata, timeout=timeout)
        return response

    async def listen(
        self,
        session_id: str,
        *,
        after: str = "",
        wait_seconds: int = 0,
        timeout_seconds: int = 0,
        retries: int = 5,
        backoff: float = 0.2,
    ) -> AsyncIterator[pb.Event]:
        """Yield the session's events up to `end`; on a dropped stream, resume after the last one seen.

        Returns only after `end`, or at once when `after` is `end`'s id. Raises `grpc.aio.AioRpcError`
        when a limit ends the Listen early: DEADLINE_EXCEEDED after `timeout_seconds` of silence (0: no
        limit), NOT_FOUND when no stream appears within `wait_seconds` (0: the server's 3), OUT_OF_RANGE
        for a trimmed cursor. Heartbeats are consumed here. Up to `retries` reconnects in a row,
        `backoff` seconds apart, doubling. Events that are ready together come in one response (up to
        `MAX_BATCH_EVENTS`), still yielded one by one; a server that does not batch is asked without it.
        """
        attempt = 0
        delivered = False
        while True:
            request = pb.ListenRequest(
                session_id=session_id,
                after_event_id=after,
                wait_seconds=wait_seconds,
                timeout_seconds=timeout_seconds,
                max_batch_events=0 if self._unbatched else MAX_BATCH_EVENTS,
            )
            call = self.stub.Listen(request, metadata=self.metadata)
            try:
                async for response in call:
                    payload = response.WhichOneof("payload")
                    if payload == "event":
                        events: Iterable[pb.Event] = (response.event,)
                    elif payload == "events":
                        events = response.events.events
                    else:
                        continue
                    attempt = 0
                    for event in events:
                        after = event.id
                        delivered = True
                        yield event
                        if event.type == pb.EVENT_TYPE_END:
                            return
                if after and not delivered:
                    return  # resumed after `end`: the server closes such a Listen at once
                raise _closed_before_end(after)
            except grpc.aio.AioRpcError as e:
                if request.max_batch_events and _refuses_batches(e):
                    self._unbatched = True  # a server older than `max_batch_events`: ask it again without
                    continue
                if e.code() not in _RETRYABLE or attempt >= retries:
                    raise
            finally:
                call.cancel()  # a caller that stops early ends the call (and the server's reads) now
            await asyncio.sleep(backoff * 2**attempt)  # reconnect back-off, not synchronisation
            attempt += 1

    async def cancel(self, session_id: str, *, run_id: str = "", timeout: float | None = 10.0) -> bool:
        """Stop the session's live run (`run_id`: only that one); `True` if there was one (naming the run,
        also if it was cancelled already: a retry answers as the first call did)."""
        response = await self.stub.Cancel(
            pb.CancelRequest(session_id=session_id, run_id=run_id), metadata=self.metadata, timeout=timeout
        )
        return bool(response.cancelled)

    async def respond(
        self, session_id: str, run_id: str, answers: Iterable[pb.ToolAnswer], *, timeout: float | None = 10.0
    ) -> pb.RespondResponse:
        """Answer deferred tool calls the session's run `run_id` waits on (`approve`, `deny`, `external_result`,
        `retry`); once every call has an answer the run goes on (`continued`), else `pending_call_ids` says which
        still need one. Safe to retry: a retry answers as the first call did."""
        request = pb.RespondRequest(session_id=session_id, run_id=run_id, answers=list(answers))
        return await self.stub.Respond(request, metadata=self.metadata, timeout=timeout)

    async def list_active(self, *, timeout: float | None = 10.0) -> list[str]:
        """Session ids of the caller's live runs."""
        return [s.session_id for s in await self.active_sessions(timeout=timeout)]

    async def active_sessions(self, *, timeout: float | None = 10.0) -> list[pb.ActiveSession]:
        """The caller's sessions with a queued, running or waiting run, oldest first: each one's run id, agent,
        state, attempt and start time."""
        response = await self.stub.ListActive(pb.ListActiveRequest(), metadata=self.metadata, timeout=timeout)
        return list(response.sessions)


Attachable: TypeAlias = "BinaryContent | ImageUrl | DocumentUrl | AudioUrl | VideoUrl | pb.Attachment"
"""What `StreamClient.run` takes as an attachment."""

_URL_KINDS = {
    "image-url": pb.ATTACHMENT_KIND_IMAGE,
    "document-url": pb.ATTACHMENT_KIND_DOCUMENT,
    "audio-url": pb.ATTACHMENT_KIND_AUDIO,
    "video-url": pb.ATTACHMENT_KIND_VIDEO,
}


def attachment_to_proto(attachment: Attachable) -> pb.Attachment:
    """A pydantic-ai file (`BinaryContent`, or a `FileUrl`: its kind said, its media type if it has one) as a
    `RunRequest` attachment; a `pb.Attachment` as it is."""
    if isinstance(attachment, pb.Attachment):
        return attachment
    if attachment.kind == "binary":
        return pb.Attachment(data=attachment.data, media_type=attachment.media_type, name=attachment.identifier)
    try:
        media_type = attachment.media_type
    except ValueError:  # none given and none known for its URL: the server infers it from `kind`, or refuses it
        media_type = ""
    kind = _URL_KINDS.get(attachment.kind, pb.ATTACHMENT_KIND_UNSPECIFIED)
    return pb.Attachment(url=attachment.url, media_type=media_type, kind=kind, name=attachment.identifier)


def _struct(values: Mapping[str, Any] | None) -> struct_pb2.Struct | None:
    if values is None:
        return None
    struct = struct_pb2.Struct()
    struct.update(dict(values))
    return struct


def _refuses_batches(error: grpc.aio.AioRpcError) -> bool:
    """A server that does not know `ListenRequest.max_batch_events` refuses requests that set it."""
    return error.code() == grpc.StatusCode.INVALID_ARGUMENT and "fields this server does not know" in (
        error.details() or ""
    )


def _closed_before_end(after: str) -> grpc.aio.AioRpcError:
    """A Listen that closed OK before `end`: not the run's end (an older server's timeout, a proxy), so resumed."""
    details = f"Listen closed before `end` (last event: {after or 'none'})"
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def input_calls(event: pb.Event) -> list[pb.DeferredCall]:
    """The calls an `EVENT_KIND_INPUT_REQUIRED` event waits on (none for another event)."""
    return list(event.calls) if event.kind == pb.EVENT_KIND_INPUT_REQUIRED else []


def approve(tool_call_id: str, *, override_args: Mapping[str, Any] | None = None) -> pb.ToolAnswer:
    """An approval: the tool runs (with `override_args` instead of the model's, if given)."""
    approval = pb.Approval(approved=True)
    if override_args is not None:
        approval.override_args.update(override_args)
    return pb.ToolAnswer(tool_call_id=tool_call_id, approval=approval)


def deny(tool_call_id: str, message: str = "") -> pb.ToolAnswer:
    """A denial: the tool does not run; the model is told `message`."""
    return pb.ToolAnswer(tool_call_id=tool_call_id, approval=pb.Approval(approved=False, denial_message=message))


def external_result(tool_call_id: str, value: Any) -> pb.ToolAnswer:
    """The result of an external call (or the answer to a question): `value`, any JSON value."""
    result = pb.ExternalResult()
    json_format.ParseDict(value, result.value)
    return pb.ToolAnswer(tool_call_id=tool_call_id, result=result)


def retry(tool_call_id: str, message: str) -> pb.ToolAnswer:
    """An external call that failed: the model sees `message` as a retry prompt for it."""
    return pb.ToolAnswer(tool_call_id=tool_call_id, result=pb.ExternalResult(retry=message))


def event_body(event: pb.Event) -> dict[str, Any]:
    """The event's body as a dict (the JSON the library wrote)."""
    body: dict[str, Any] = json.loads(event.body_json or "{}")
    return body


@dataclass(kw_only=True)
class TranscriptPart:
    """A part of a node: a response part (with its `event_idx`), or a tool return or retry prompt (without)."""

    part_kind: pb.PartKind.ValueType
    part_kind_name: str
    event_idx: int | None = None
    content: str = ""
    """Text and thinking: the start's content and every delta since; tool returns: the return value."""
    tool_name: str | None = None
    tool_call_id: str | None = None
    args: dict[str, Any] | None = None
    """Tool calls: the complete arguments."""
    outcome: pb.ToolOutcome.ValueType = pb.TOOL_OUTCOME_UNSPECIFIED


@dataclass(kw_only=True)
class Transcript(Fold[TranscriptPart]):
    """What a run has output so far, folded from its events with `apply`; a resume drops what it superseded."""

    error: dict[str, Any] | None = None
    """The body of the last `error` event (e.g. `{"msg": "canceled"}`), or `None`."""
    ended: bool = False
    """Whether the run's `end` came."""

    def apply(self, event: pb.Event) -> bool:
        """Fold one event in; `True` when it dropped output folded before (a resume), so a UI re-renders."""
        if event.type == pb.EVENT_TYPE_END:
            self.ended = True
        elif event.type == pb.EVENT_TYPE_ERROR:
            self.error = event_body(event)
        if not event.HasField("idx"):  # begin, end, error, custom events: no node
            return False
        return self.fold(_fold_body(event), lambda: _part(event))


_FOLDED_KINDS = {
    pb.EVENT_KIND_RESUMED: "resumed",
    pb.EVENT_KIND_PART_START: "part_start",
    pb.EVENT_KIND_PART_DELTA: "part_delta",
}
"""The event kinds the fold tells apart, by the name their body has."""


def _fold_body(event: pb.Event) -> dict[str, Any]:
    """What the fold reads of an event, as the event's body has it (an `Event` may come without its JSON)."""
    return {
        "event": _FOLDED_KINDS.get(event.kind, ""),
        "idx": event.idx,
        "event_idx": event.event_idx,  # a delta's (a part's own comes with `_part`)
        "content_delta": event.content_delta,
        "attempt": event.attempt,
    }


def _part(event: pb.Event) -> TranscriptPart:
    return TranscriptPart(
        part_kind=event.part_kind,
        part_kind_name=event.part_kind_name,
        event_idx=event.event_idx if event.HasField("event_idx") else None,
        content=event.content,
        tool_name=event.tool_name if event.HasField("tool_name") else None,
        tool_call_id=event.tool_call_id if event.HasField("tool_call_id") else None,
        args=json_format.MessageToDict(event.args) if event.HasField("args") else None,
        outcome=event.outcome,
    )
