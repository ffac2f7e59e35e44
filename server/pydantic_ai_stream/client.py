"""A typed asyncio client for `AgentStreamService`, with a `listen` that resumes after drops, and the
`Transcript` that folds a run's events into its output, without what a resumed run superseded.

Imports neither pydantic-ai nor redis, so a process that only talks to a server starts fast.
"""

from ._edges.grpc.client import Attachable, StreamClient, Transcript, TranscriptNode, TranscriptPart, event_body
from ._exports import named

__all__ = ["Attachable", "StreamClient", "Transcript", "TranscriptNode", "TranscriptPart", "event_body"]

for _value in (StreamClient, Transcript, TranscriptNode, TranscriptPart, event_body):
    named(_value, __name__)
del _value
