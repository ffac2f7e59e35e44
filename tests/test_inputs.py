"""A run's inputs (`_core/inputs.py`, pure): the bounds of its context and attachments, each attachment's checks,
the summary `begin` shows, the pydantic-ai content it becomes, and the stored form's round trip."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from pydantic_ai.messages import BinaryContent, BinaryImage, DocumentUrl, ImageUrl, VideoUrl

from pydantic_ai_stream import Attachment
from pydantic_ai_stream._core.errors import InvalidRequestError
from pydantic_ai_stream._core.inputs import InputBounds, decode_attachments, encode_attachments, json_numbers
from pydantic_ai_stream.server import ServerSettings

BOUNDS = InputBounds(max_context_bytes=20, max_attachments=2, max_attachment_bytes=10, max_attachments_bytes=15)


def test_a_context_is_measured_as_compact_json_and_its_integral_numbers_are_ints() -> None:
    assert InputBounds().context({"n": 42.0, "xs": [1.0, 2.5]}) == {"n": 42, "xs": [1, 2.5]}
    assert BOUNDS.context({"k": "é" * 6}) == {"k": "é" * 6}  # 20 bytes as UTF-8 JSON: at the bound
    with pytest.raises(InvalidRequestError, match="context is 21 bytes as JSON; the limit is 20"):
        BOUNDS.context({"k": "é" * 6 + "x"})
    with pytest.raises(InvalidRequestError, match="finite"):
        BOUNDS.context({"n": float("nan")})
    assert json_numbers(2.0**60) == 2.0**60, "beyond a double's exact integers: left a float"


def test_attachments_are_bounded_in_count_each_and_together() -> None:
    one = Attachment(data=b"x" * 8, media_type="image/png")
    assert len(BOUNDS.attachments([one])) == 1
    with pytest.raises(InvalidRequestError, match="3 attachments; the limit is 2"):
        BOUNDS.attachments([one] * 3)
    with pytest.raises(InvalidRequestError, match="attachment 0 is 11 bytes; the limit is 10 each"):
        BOUNDS.attachments([Attachment(data=b"x" * 11, media_type="image/png")])
    with pytest.raises(InvalidRequestError, match="attachments are 16 bytes together; the limit is 15"):
        BOUNDS.attachments([one, one])
    url = Attachment(url="https://e.co/a.png")  # a URL counts its length
    with pytest.raises(InvalidRequestError, match="attachment 0 is 18 bytes"):
        BOUNDS.attachments([url])


@pytest.mark.parametrize(
    ("attachment", "kind", "media_type"),
    [
        (Attachment(data=b"x", media_type="IMAGE/PNG"), "image", "image/png"),
        (Attachment(data=b"x", media_type="application/pdf"), "document", "application/pdf"),
        (Attachment(data=b"x", media_type="audio/mpeg"), "audio", "audio/mpeg"),
        (Attachment(url="https://e.co/a.mp4"), "video", "video/mp4"),
        (Attachment(url="https://e.co/a.pdf?x=1"), "document", "application/pdf"),
        (Attachment(url="https://e.co/photo", kind="image", media_type="image/jpeg"), "image", "image/jpeg"),
    ],
)
def test_a_kind_is_inferred_from_the_media_type_or_the_urls_extension(
    attachment: Attachment, kind: str, media_type: str
) -> None:
    [checked] = InputBounds().attachments([attachment])
    assert (checked.kind, checked.media_type) == (kind, media_type)


def test_each_attachment_becomes_the_pydantic_ai_content_of_its_kind() -> None:
    image, document, video, photo = InputBounds().attachments(
        [
            Attachment(data=b"\x89PNG", media_type="image/png", name="a.png"),
            Attachment(data=b"%PDF", media_type="application/pdf"),
            Attachment(url="https://e.co/a.mp4"),
            Attachment(url="https://e.co/photo", media_type="image/jpeg", name="p"),
        ]
    )
    content = image.content()
    assert isinstance(content, BinaryImage)
    assert (content.data, content.media_type, content.identifier) == (b"\x89PNG", "image/png", "a.png")
    assert type(document.content()) is BinaryContent
    assert isinstance(video.content(), VideoUrl)
    url = photo.content()
    assert isinstance(url, ImageUrl)
    assert (url.url, url.media_type, url.identifier) == ("https://e.co/photo", "image/jpeg", "p")
    assert isinstance(Attachment(url="https://e.co/x", kind="document").content(), DocumentUrl)


def test_the_summary_never_holds_the_bytes_and_the_stored_form_round_trips() -> None:
    attachments = InputBounds().attachments(
        [
            Attachment(data=b"\x00\n\xff" * 3, media_type="image/png", name="ü.png"),
            Attachment(url="https://e.co/a.pdf", name="report"),
            Attachment(data=b"\n", media_type="text/plain"),
        ]
    )
    assert [a.summary() for a in attachments] == [
        {"kind": "image", "media_type": "image/png", "size": 9, "name": "ü.png"},
        {"kind": "document", "media_type": "application/pdf", "url": "https://e.co/a.pdf", "name": "report"},
        {"kind": "document", "media_type": "text/plain", "size": 1},
    ]
    assert decode_attachments(encode_attachments(attachments)) == attachments


def test_a_server_refuses_to_start_when_its_receive_limit_does_not_admit_a_run_at_every_bound() -> None:
    assert ServerSettings().input_bounds() == InputBounds(), "the defaults fit the default 8 MiB"
    with pytest.raises(ValidationError, match=r"max_request_bytes \(\d+\) must admit a run at every bound"):
        ServerSettings(max_attachments_bytes=6 * 1024 * 1024)
    raised = ServerSettings(max_attachments_bytes=6 * 1024 * 1024, max_request_bytes=10 * 1024 * 1024)
    assert raised.input_bounds().max_attachments_bytes == 6 * 1024 * 1024
