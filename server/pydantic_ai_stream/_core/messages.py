"""Model messages as the stores and checkpoints keep them: each message's JSON on its own, read back as one list."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter

__all__ = ["decode_messages", "encode_message", "encode_messages"]


def encode_message(message: ModelMessage) -> bytes:
    """One message as JSON, as `ModelMessagesTypeAdapter` writes it in a list (binary content in base64)."""
    return ModelMessagesTypeAdapter.dump_json([message])[1:-1]


def encode_messages(messages: Sequence[ModelMessage]) -> list[bytes]:
    """Each message's JSON, as a checkpoint keeps them (`decode_messages` reads them back)."""
    return [encode_message(message) for message in messages]


def decode_messages(items: Sequence[bytes | str]) -> list[ModelMessage]:
    """The messages `encode_message` encoded, parsed as one list."""
    parts = [item.encode() if isinstance(item, str) else item for item in items]
    return ModelMessagesTypeAdapter.validate_json(b"[" + b",".join(parts) + b"]")
