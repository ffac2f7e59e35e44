"""One fold of a run's `event` bodies into what the run has output so far (no I/O).

A node (model request, by `idx`) holds its response parts by `event_idx` (a part sent again replaces the one
before) and then its tool returns and retry prompts as they came (they have no `event_idx`). Deltas extend a
part folded before. A `resumed` marker (a worker died, another goes on from node `idx`) drops node `idx` and
after: the resumed run sends them again. `client.Transcript` (gRPC `Event`s) and the A2A edge (stream entries)
both fold this way, each with its own part type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["BodyPart", "Fold", "FoldedPart", "TranscriptNode"]


class FoldedPart(Protocol):
    """What the fold reads and extends of a part: its place in the node, its kind, its content so far."""

    event_idx: int | None
    part_kind_name: str
    content: str


P = TypeVar("P", bound=FoldedPart)


@dataclass(kw_only=True)
class BodyPart:
    """A part as its `part_start` body has it (only text matters to who folds with it)."""

    part_kind_name: str
    event_idx: int | None
    content: str

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> BodyPart:
        """The part a `part_start` body starts (a missing `event_idx`: a tool return's)."""
        event_idx = body.get("event_idx")
        return cls(
            part_kind_name=str(body.get("part_kind") or ""),
            event_idx=event_idx if isinstance(event_idx, int) else None,
            content=str(body.get("content") or ""),
        )


@dataclass(kw_only=True)
class TranscriptNode(Generic[P]):
    """A node (model request) of a run: its response parts by `event_idx`, then its tool returns as they came."""

    idx: int
    _response: dict[int, P] = field(default_factory=dict)
    _returns: list[P] = field(default_factory=list)

    @property
    def parts(self) -> list[P]:
        """The response parts in `event_idx` order, then the tool returns and retry prompts in arrival order."""
        return [self._response[i] for i in sorted(self._response)] + self._returns


@dataclass(kw_only=True)
class Fold(Generic[P]):
    """A run's output folded from its `event` bodies with `fold`; a resume drops what it superseded."""

    attempt: int = 1
    """The attempt the run goes on as: 1 until a worker died and another resumed it."""
    _nodes: dict[int, TranscriptNode[P]] = field(default_factory=dict)

    @property
    def nodes(self) -> list[TranscriptNode[P]]:
        """The nodes in `idx` order."""
        return [self._nodes[i] for i in sorted(self._nodes)]

    def fold(self, body: Mapping[str, Any], new_part: Callable[[], P]) -> bool:
        """Fold one `event` body in (`new_part` makes a `part_start`'s part); `True` when it dropped output
        folded before (a resume)."""
        idx, kind = body.get("idx"), body.get("event")
        if not isinstance(idx, int):  # not a node's event
            return False
        if kind == "resumed":
            if isinstance(attempt := body.get("attempt"), int):
                self.attempt = attempt
            superseded = [i for i in self._nodes if i >= idx]
            for i in superseded:
                del self._nodes[i]
            return bool(superseded)
        if kind == "part_delta":
            # A listener that joined after a cursor may get deltas of a part it never saw start: nothing to extend.
            node, event_idx = self._nodes.get(idx), body.get("event_idx")
            part = node._response.get(event_idx) if node is not None and isinstance(event_idx, int) else None
            if part is not None:
                part.content += str(body.get("content_delta") or "")
            return False
        node = self._nodes.setdefault(idx, TranscriptNode(idx=idx))
        if kind == "part_start":
            part = new_part()
            if part.event_idx is None:
                node._returns.append(part)
            else:
                node._response[part.event_idx] = part  # a response part sent again replaces the one before
        return False

    def text(self) -> str:
        """The text parts' content, node after node: what the run has answered so far."""
        return "".join(p.content for node in self.nodes for p in node.parts if p.part_kind_name == "text")

    def ends_text(self, idx: int, event_idx: int) -> bool:
        """Whether text part `event_idx` of node `idx` is the last text of all (so its deltas extend `text()`)."""
        node = self._nodes.get(idx)
        if node is None or idx != max(self._nodes) or event_idx != max(node._response, default=None):
            return False
        part = node._response[event_idx]
        return part.part_kind_name == "text" and not any(p.part_kind_name == "text" for p in node._returns)
