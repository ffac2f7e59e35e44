"""A `RunRequest`'s context and attachments as admission takes them (`Admission.check_inputs` checks them), and a
`RespondRequest`'s answers as the library's."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from ..._core.deferred import ToolAnswer
from ..._core.errors import InvalidRequestError
from ..._core.inputs import Attachment, AttachmentKind
from ..._core.keys import excerpt
from ...v1 import stream_pb2 as pb

__all__ = ["request_attachments", "request_context", "tool_answer"]

_KINDS: dict[int, AttachmentKind | None] = {
    pb.ATTACHMENT_KIND_UNSPECIFIED: None,
    pb.ATTACHMENT_KIND_IMAGE: "image",
    pb.ATTACHMENT_KIND_DOCUMENT: "document",
    pb.ATTACHMENT_KIND_AUDIO: "audio",
    pb.ATTACHMENT_KIND_VIDEO: "video",
}


def request_context(request: pb.RunRequest) -> dict[str, Any] | None:
    """The request's context as JSON (`None`: none given); `InvalidRequestError` for a NaN or an infinity."""
    if not request.HasField("context"):
        return None
    try:
        return json_format.MessageToDict(request.context)
    except ValueError:  # NaN or infinity: no JSON number carries them
        raise InvalidRequestError("context numbers must be finite") from None


def request_attachments(request: pb.RunRequest) -> list[Attachment]:
    """The request's attachments, unchecked; `InvalidRequestError` for an unknown kind."""
    attachments = []
    for n, given in enumerate(request.attachments):
        if given.kind not in _KINDS:
            raise InvalidRequestError(f"attachment {n}: unknown kind {given.kind}")
        kind = _KINDS[given.kind]
        source = given.WhichOneof("source")
        attachments.append(
            Attachment(
                data=given.data if source == "data" else None,
                url=given.url if source == "url" else None,
                media_type=given.media_type,
                kind=kind,
                name=given.name,
            )
        )
    return attachments


def tool_answer(answer: pb.ToolAnswer) -> ToolAnswer:
    """A `Respond` answer as the library's (`InvalidRequestError` for one that answers nothing)."""
    call_id = answer.tool_call_id
    if answer.HasField("approval"):
        approval = answer.approval
        override = json_format.MessageToDict(approval.override_args) if approval.HasField("override_args") else None
        return ToolAnswer(
            tool_call_id=call_id,
            approved=approval.approved,
            denial_message=approval.denial_message,
            override_args=override,
        )
    if answer.HasField("result"):
        result = answer.result
        if result.HasField("retry"):
            return ToolAnswer(tool_call_id=call_id, retry=result.retry)
        if result.HasField("value"):
            return ToolAnswer(tool_call_id=call_id, value=json_format.MessageToDict(result.value))
    raise InvalidRequestError(f"the answer to tool call {excerpt(call_id)} has no approval, value or retry")
