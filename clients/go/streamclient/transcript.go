package streamclient

import (
	"sort"
	"strings"

	streamv1 "github.com/pydantic-ai-stream/pydantic-ai-stream/clients/go/pydantic_ai_stream/v1"
)

// TranscriptPart is a part of a node: a response part (EventIdx set), or a tool return or retry
// prompt (EventIdx nil). Fields the part's events did not carry are zero.
type TranscriptPart struct {
	PartKind     streamv1.PartKind
	PartKindName string
	EventIdx     *uint32
	Content      string // text and thinking: the start's content and every delta since; tool returns: the return value
	ToolName     string
	ToolCallID   string
	Args         map[string]any // tool calls: the complete arguments
	Outcome      streamv1.ToolOutcome
}

// TranscriptNode is a node (model request) of a run: its response parts in EventIdx order, then
// its tool returns and retry prompts in arrival order.
type TranscriptNode struct {
	Idx   uint32
	Parts []TranscriptPart
}

type foldedNode struct {
	response map[uint32]*TranscriptPart
	returns  []*TranscriptPart
}

// Transcript is what a run has output so far, folded from its events with Apply; a resume drops
// what it superseded. The zero value is an empty transcript.
type Transcript struct {
	nodes   map[uint32]*foldedNode
	attempt uint32
	err     map[string]any
	ended   bool
}

// Apply folds one event in. It returns true when the event dropped output folded before (a
// resume that superseded something), so a UI knows to render again from the transcript.
func (t *Transcript) Apply(event *streamv1.Event) bool {
	switch event.Type {
	case streamv1.EventType_EVENT_TYPE_END:
		t.ended = true
	case streamv1.EventType_EVENT_TYPE_ERROR:
		t.err, _ = Body(event) // non-nil even if the body is not JSON: the run failed all the same
	}
	if event.Idx == nil {
		return false // begin, end, error, custom events: no node
	}
	idx := event.GetIdx()
	switch event.Kind {
	case streamv1.EventKind_EVENT_KIND_RESUMED:
		t.attempt = event.Attempt
		superseded := false
		for i := range t.nodes {
			if i >= idx {
				delete(t.nodes, i)
				superseded = true
			}
		}
		return superseded
	case streamv1.EventKind_EVENT_KIND_PART_DELTA:
		// A listener that joined after a cursor may get deltas of a part it never saw start: nothing to extend.
		if node := t.nodes[idx]; node != nil {
			if part := node.response[event.GetEventIdx()]; part != nil {
				part.Content += event.GetContentDelta()
			}
		}
		return false
	}
	if t.nodes == nil {
		t.nodes = map[uint32]*foldedNode{}
	}
	node := t.nodes[idx]
	if node == nil {
		node = &foldedNode{response: map[uint32]*TranscriptPart{}}
		t.nodes[idx] = node
	}
	if event.Kind == streamv1.EventKind_EVENT_KIND_PART_START {
		part := &TranscriptPart{
			PartKind:     event.PartKind,
			PartKindName: event.PartKindName,
			Content:      event.GetContent(),
			ToolName:     event.GetToolName(),
			ToolCallID:   event.GetToolCallId(),
			Outcome:      event.Outcome,
		}
		if event.Args != nil {
			part.Args = event.Args.AsMap()
		}
		if event.EventIdx == nil {
			node.returns = append(node.returns, part)
		} else {
			eventIdx := *event.EventIdx
			part.EventIdx = &eventIdx
			node.response[eventIdx] = part // a response part sent again replaces the one before
		}
	}
	return false
}

// Nodes returns the nodes in Idx order (copies: folding more events does not change them).
func (t *Transcript) Nodes() []TranscriptNode {
	idxs := make([]uint32, 0, len(t.nodes))
	for idx := range t.nodes {
		idxs = append(idxs, idx)
	}
	sort.Slice(idxs, func(a, b int) bool { return idxs[a] < idxs[b] })
	nodes := make([]TranscriptNode, 0, len(idxs))
	for _, idx := range idxs {
		folded := t.nodes[idx]
		eventIdxs := make([]uint32, 0, len(folded.response))
		for i := range folded.response {
			eventIdxs = append(eventIdxs, i)
		}
		sort.Slice(eventIdxs, func(a, b int) bool { return eventIdxs[a] < eventIdxs[b] })
		parts := make([]TranscriptPart, 0, len(eventIdxs)+len(folded.returns))
		for _, i := range eventIdxs {
			parts = append(parts, *folded.response[i])
		}
		for _, part := range folded.returns {
			parts = append(parts, *part)
		}
		nodes = append(nodes, TranscriptNode{Idx: idx, Parts: parts})
	}
	return nodes
}

// Attempt is the attempt the run goes on as: 1 until a worker died and another resumed it.
func (t *Transcript) Attempt() uint32 {
	if t.attempt == 0 {
		return 1
	}
	return t.attempt
}

// Error is the body of the last `error` event (e.g. {"msg": "canceled"}), or nil.
func (t *Transcript) Error() map[string]any {
	return t.err
}

// Ended says whether the run's `end` came.
func (t *Transcript) Ended() bool {
	return t.ended
}

// Text is the text parts' content, node after node: what the run has answered so far.
func (t *Transcript) Text() string {
	var text strings.Builder
	for _, node := range t.Nodes() {
		for _, part := range node.Parts {
			if part.PartKind == streamv1.PartKind_PART_KIND_TEXT {
				text.WriteString(part.Content)
			}
		}
	}
	return text.String()
}
