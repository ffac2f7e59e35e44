"""The stored form of pydantic-ai messages: each message's JSON, as a durable run's checkpoint keeps them."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ConfigDict, TypeAdapter
from pydantic_ai.messages import ModelMessage, ModelMessagesTypeAdapter

__all__ = ["decode_messages", "encode_messages"]

_MessageTypeAdapter: TypeAdapter[ModelMessage] = TypeAdapter(
    ModelMessage, config=ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")
)
"""One message as `ModelMessagesTypeAdapter` writes each of a list's (bytes as base64)."""


def encode_messages(messages: Sequence[ModelMessage]) -> list[bytes]:
    """Each message's JSON, as a checkpoint keeps them."""
    return [_MessageTypeAdapter.dump_json(message) for message in messages]


def decode_messages(items: Sequence[bytes]) -> list[ModelMessage]:
    """The messages `encode_messages` encoded."""
    return ModelMessagesTypeAdapter.validate_json(b"[" + b",".join(items) + b"]")
