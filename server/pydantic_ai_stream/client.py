"""A typed asyncio client for `AgentStreamService`, with a `listen` that resumes after drops, and the
`Transcript` that folds a run's events into its output, without what a resumed run superseded.

Imports neither pydantic-ai nor redis, so a process that only talks to a server starts fast.
"""

from ._edges.grpc.client import (
    Attachable,
    StreamClient,
    Transcript,
    TranscriptNode,
    TranscriptPart,
    approve,
    deny,
    event_body,
    external_result,
    input_calls,
    retry,
)
from ._exports import named

__all__ = [
    "Attachable",
    "StreamClient",
    "Transcript",
    "TranscriptNode",
    "TranscriptPart",
    "approve",
    "deny",
    "event_body",
    "external_result",
    "input_calls",
    "retry",
]

for _value in (StreamClient, Transcript, TranscriptNode, TranscriptPart, approve, deny, event_body, external_result,
               input_calls, retry):  # fmt: skip
    named(_value, __name__)
del _value
