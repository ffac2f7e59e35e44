"""A run's inputs past its prompt's text: the request context its hosted agent's deps get, and the attachments
its user prompt carries after the text. Their bounds (`InputBounds`), the summary `begin` shows of an attachment,
the pydantic-ai content each becomes, and the one stored form of a run's attachments (`encode_attachments`)."""

from __future__ import annotations

import json
import math
import mimetypes
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import ValidationError
from pydantic_ai.messages import AudioUrl, BinaryContent, DocumentUrl, ImageUrl, VideoUrl

from .errors import InvalidRequestError
from .keys import excerpt

__all__ = [
    "DEFAULT_MAX_ATTACHMENTS",
    "DEFAULT_MAX_ATTACHMENTS_BYTES",
    "DEFAULT_MAX_ATTACHMENT_BYTES",
    "DEFAULT_MAX_CONTEXT_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_URL_LENGTH",
    "Attachment",
    "AttachmentContent",
    "AttachmentKind",
    "InputBounds",
    "check_attachment",
    "decode_attachments",
    "encode_attachments",
    "first_error",
    "json_numbers",
]

AttachmentKind = Literal["image", "document", "audio", "video"]
"""What an attachment is to the model."""
AttachmentContent = BinaryContent | ImageUrl | DocumentUrl | AudioUrl | VideoUrl
"""The pydantic-ai user content an attachment becomes."""

DEFAULT_MAX_CONTEXT_BYTES = 64 * 1024
DEFAULT_MAX_ATTACHMENTS = 16
DEFAULT_MAX_ATTACHMENT_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_ATTACHMENTS_BYTES = 4 * 1024 * 1024
MAX_URL_LENGTH = 8192
MAX_NAME_LENGTH = 256

_KINDS: tuple[AttachmentKind, ...] = get_args(AttachmentKind)
_MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_URL_CLASSES: dict[AttachmentKind, type[ImageUrl | DocumentUrl | AudioUrl | VideoUrl]] = {
    "image": ImageUrl,
    "document": DocumentUrl,
    "audio": AudioUrl,
    "video": VideoUrl,
}


@dataclass(frozen=True, kw_only=True)
class Attachment:
    """A file for the model: `data` with a `media_type`, or a `url` (http/https); `kind` `None`: inferred."""

    data: bytes | None = None
    url: str | None = None
    media_type: str = ""
    kind: AttachmentKind | None = None
    name: str = ""

    @property
    def size(self) -> int:
        """Bytes it counts toward the bounds: its data's, or its URL's."""
        return len(self.data) if self.data is not None else len((self.url or "").encode())

    def summary(self) -> dict[str, Any]:
        """What `begin` shows of it (JSON): its kind, media type, name, and its size or URL; never its bytes."""
        shown: dict[str, Any] = {"kind": self.kind}
        if self.media_type:
            shown["media_type"] = self.media_type
        if self.data is not None:
            shown["size"] = len(self.data)
        else:
            shown["url"] = self.url
        if self.name:
            shown["name"] = self.name
        return shown

    def content(self) -> AttachmentContent:
        """The pydantic-ai user content it is: `BinaryContent`, or the URL class of its kind."""
        identifier = self.name or None
        if self.data is not None:
            return BinaryContent.narrow_type(
                BinaryContent(data=self.data, media_type=self.media_type, identifier=identifier)
            )
        url_class = _URL_CLASSES[self.kind or "document"]
        return url_class(self.url or "", media_type=self.media_type or None, identifier=identifier)


@dataclass(frozen=True, kw_only=True)
class InputBounds:
    """How large a run's context and attachments may be (`InvalidRequestError` beyond)."""

    max_context_bytes: int = DEFAULT_MAX_CONTEXT_BYTES
    """Largest context, as compact UTF-8 JSON."""
    max_attachments: int = DEFAULT_MAX_ATTACHMENTS
    max_attachment_bytes: int = DEFAULT_MAX_ATTACHMENT_BYTES
    """Largest attachment: its data's bytes (a URL: its length)."""
    max_attachments_bytes: int = DEFAULT_MAX_ATTACHMENTS_BYTES
    """Largest sum of a run's attachments' sizes."""

    def context(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """`context` within its bound, its integral numbers as ints (`json_numbers`)."""
        checked: dict[str, Any] = json_numbers(dict(context))
        try:
            size = len(json.dumps(checked, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode())
        except (TypeError, ValueError) as e:
            raise InvalidRequestError(f"context must be JSON with finite numbers ({e})") from None
        if size > self.max_context_bytes:
            raise InvalidRequestError(f"context is {size} bytes as JSON; the limit is {self.max_context_bytes}")
        return checked

    def attachments(self, attachments: Sequence[Attachment]) -> list[Attachment]:
        """`attachments` checked one by one (`check_attachment`) and together, their kinds inferred."""
        if len(attachments) > self.max_attachments:
            raise InvalidRequestError(f"{len(attachments)} attachments; the limit is {self.max_attachments}")
        checked = [self._one(n, attachment) for n, attachment in enumerate(attachments)]
        if (total := sum(attachment.size for attachment in checked)) > self.max_attachments_bytes:
            raise InvalidRequestError(
                f"attachments are {total} bytes together; the limit is {self.max_attachments_bytes}"
            )
        return checked

    def _one(self, n: int, attachment: Attachment) -> Attachment:
        checked = check_attachment(n, attachment)
        if checked.size > self.max_attachment_bytes:
            raise InvalidRequestError(
                f"attachment {n} is {checked.size} bytes; the limit is {self.max_attachment_bytes} each"
            )
        return checked


def check_attachment(n: int, attachment: Attachment) -> Attachment:
    """Attachment `n` as the model gets it (its kind inferred), or `InvalidRequestError`: neither or both of data
    and URL, empty data, a URL not http(s), a media type pydantic-ai knows no format for, a kind that
    contradicts it, a bad name."""
    what = f"attachment {n}"
    if (attachment.data is None) == (attachment.url is None):
        raise InvalidRequestError(f"{what} must have either data or a url")
    if len(attachment.name) > MAX_NAME_LENGTH or _CONTROL.search(attachment.name):
        raise InvalidRequestError(f"{what}: name must be at most {MAX_NAME_LENGTH} characters, no control characters")
    media_type = attachment.media_type.strip().lower()
    if media_type and not _MEDIA_TYPE.fullmatch(media_type):
        raise InvalidRequestError(f"{what}: media type {excerpt(attachment.media_type)} is not type/subtype")
    if attachment.data is not None:
        if not attachment.data:
            raise InvalidRequestError(f"{what}: data is empty")
        if not media_type:
            raise InvalidRequestError(f"{what}: data needs a media_type")
    else:
        _check_url(what, attachment.url or "")
    # Said outright when its URL's path names it: pydantic-ai guesses from the whole URL, which a query defeats.
    media_type = media_type or _guessed(attachment.url or "")
    inferred = _kind_of(media_type)
    kind = attachment.kind or inferred
    if kind is None:
        raise InvalidRequestError(f"{what}: give a media_type (none is known for its url)")
    if attachment.kind is not None and inferred is not None and media_type and inferred != attachment.kind:
        raise InvalidRequestError(f"{what}: kind {attachment.kind} does not fit media type {media_type}")
    checked = Attachment(
        data=attachment.data, url=attachment.url, media_type=media_type, kind=kind, name=attachment.name
    )
    try:
        checked.content().format  # noqa: B018  # raises for a media type pydantic-ai's models know no format for
    except ValueError:
        shown = media_type or "inferred from its url"
        raise InvalidRequestError(f"{what}: media type {shown} is not a {kind} type pydantic-ai knows") from None
    return checked


def _check_url(what: str, url: str) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise InvalidRequestError(f"{what}: url is {len(url)} characters; the limit is {MAX_URL_LENGTH}")
    if _CONTROL.search(url) or " " in url:
        raise InvalidRequestError(f"{what}: url must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise InvalidRequestError(f"{what}: url {excerpt(url)} does not parse") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(f"{what}: url {excerpt(url)} must be http or https, with a host")


def _guessed(url: str) -> str:
    """The media type a URL's path names by its extension (`""`: none)."""
    return (mimetypes.guess_type(urlsplit(url).path)[0] or "") if url else ""


def _kind_of(media_type: str) -> AttachmentKind | None:
    if not media_type:
        return None
    top = media_type.partition("/")[0]
    return top if top in ("image", "audio", "video") else "document"  # type: ignore[return-value]


def json_numbers(value: Any) -> Any:
    """`value` with integral floats as ints: a `google.protobuf.Struct` has only doubles, so a JSON `42` arrives
    as `42.0`; the agent gets `42`, as JSON would give it."""
    if isinstance(value, float) and value.is_integer() and math.fabs(value) <= 2**53:
        return int(value)
    if isinstance(value, dict):
        return {key: json_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_numbers(item) for item in value]
    return value


def encode_attachments(attachments: Sequence[Attachment]) -> bytes:
    """A run's attachments as stored once in Redis: a JSON line describing each, then their data, concatenated."""
    described = [attachment.summary() for attachment in attachments]  # a data's summary says its size
    header = json.dumps(described, ensure_ascii=False, separators=(",", ":")).encode()
    return b"\n".join([header, b"".join(attachment.data or b"" for attachment in attachments)])


def decode_attachments(blob: bytes) -> list[Attachment]:
    """The attachments `encode_attachments` stored."""
    header, _, data = blob.partition(b"\n")
    attachments, offset = [], 0
    for described in json.loads(header):
        kind = described["kind"]
        common: dict[str, Any] = {
            "media_type": described.get("media_type", ""),
            "kind": kind if kind in _KINDS else None,
            "name": described.get("name", ""),
        }
        if "url" in described:
            attachments.append(Attachment(url=described["url"], **common))
        else:
            size = described["size"]
            attachments.append(Attachment(data=data[offset : offset + size], **common))
            offset += size
    return attachments


def first_error(error: ValidationError) -> str:
    """The first of a validation's errors, in a line: where and what (never the value, which may be long)."""
    first = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "context"
    more = f" ({error.error_count()} errors)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"
