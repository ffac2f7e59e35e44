package streamclient

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	streamv1 "github.com/pydantic-ai-stream/pydantic-ai-stream/clients/go/pydantic_ai_stream/v1"
)

func agentEvent(idx uint32, kind streamv1.EventKind) *streamv1.Event {
	return &streamv1.Event{Type: streamv1.EventType_EVENT_TYPE_EVENT, TypeName: "event", Origin: "pydantic-ai", Idx: proto.Uint32(idx), Kind: kind}
}

func textStart(idx, eventIdx uint32, content string) *streamv1.Event {
	event := agentEvent(idx, streamv1.EventKind_EVENT_KIND_PART_START)
	event.EventIdx, event.PartKind, event.PartKindName, event.Content = proto.Uint32(eventIdx), streamv1.PartKind_PART_KIND_TEXT, "text", proto.String(content)
	return event
}

func textDelta(idx, eventIdx uint32, delta string) *streamv1.Event {
	event := agentEvent(idx, streamv1.EventKind_EVENT_KIND_PART_DELTA)
	event.EventIdx, event.PartKind, event.PartDeltaKind, event.ContentDelta = proto.Uint32(eventIdx), streamv1.PartKind_PART_KIND_TEXT, streamv1.PartKind_PART_KIND_TEXT, proto.String(delta)
	return event
}

func resumedAt(idx, attempt uint32) *streamv1.Event {
	event := agentEvent(idx, streamv1.EventKind_EVENT_KIND_RESUMED)
	event.Origin, event.Attempt = "pydantic-ai-stream", attempt
	return event
}

func runtimeEvent(eventType streamv1.EventType, typeName, body string) *streamv1.Event {
	return &streamv1.Event{Type: eventType, TypeName: typeName, Origin: "pydantic-ai-stream", BodyJson: body}
}

var (
	begin = runtimeEvent(streamv1.EventType_EVENT_TYPE_BEGIN, "begin", `{"run_id": "r"}`)
	end   = runtimeEvent(streamv1.EventType_EVENT_TYPE_END, "end", "{}")
)

func node0(t *testing.T) []*streamv1.Event {
	args, err := structpb.NewStruct(map[string]any{"text": "a b"})
	if err != nil {
		t.Fatal(err)
	}
	call := agentEvent(0, streamv1.EventKind_EVENT_KIND_PART_START)
	call.EventIdx, call.PartKind, call.PartKindName = proto.Uint32(1), streamv1.PartKind_PART_KIND_TOOL_CALL, "tool-call"
	call.ToolName, call.ToolCallId, call.Args = proto.String("count_words"), proto.String("call-1"), args
	ret := agentEvent(0, streamv1.EventKind_EVENT_KIND_PART_START)
	ret.PartKind, ret.PartKindName = streamv1.PartKind_PART_KIND_TOOL_RETURN, "tool-return"
	ret.ToolName, ret.ToolCallId, ret.Content = proto.String("count_words"), proto.String("call-1"), proto.String("2")
	return []*streamv1.Event{
		agentEvent(0, streamv1.EventKind_EVENT_KIND_LLM_BEGIN),
		textStart(0, 0, "Hel"),
		textDelta(0, 0, "lo"),
		call,
		agentEvent(0, streamv1.EventKind_EVENT_KIND_LLM_END),
		ret,
	}
}

var node1Partial = []*streamv1.Event{agentEvent(1, streamv1.EventKind_EVENT_KIND_LLM_BEGIN), textStart(1, 0, "par"), textDelta(1, 0, "tial")}

// fold applies events in order and returns what each Apply returned.
func fold(transcript *Transcript, events ...*streamv1.Event) []bool {
	superseded := make([]bool, len(events))
	for i, event := range events {
		superseded[i] = transcript.Apply(event)
	}
	return superseded
}

func concat(parts ...[]*streamv1.Event) []*streamv1.Event {
	var all []*streamv1.Event
	for _, p := range parts {
		all = append(all, p...)
	}
	return all
}

func TestResumeDropsTheSupersededNodeAndTheRedoneOneFollows(t *testing.T) {
	var transcript Transcript
	if got := fold(&transcript, concat([]*streamv1.Event{begin}, node0(t), node1Partial)...); !reflect.DeepEqual(got, make([]bool, 10)) {
		t.Fatalf("nothing superseded before the resume: %v", got)
	}
	if text := transcript.Text(); text != "Hellopartial" {
		t.Fatalf("text: %q", text)
	}
	if !transcript.Apply(resumedAt(1, 2)) {
		t.Fatal("the resume superseded node 1")
	}
	if nodes := transcript.Nodes(); len(nodes) != 1 || nodes[0].Idx != 0 {
		t.Fatalf("node 1 is gone: %+v", nodes)
	}
	if text, attempt := transcript.Text(), transcript.Attempt(); text != "Hello" || attempt != 2 {
		t.Fatalf("text %q, attempt %d", text, attempt)
	}
	redone := []*streamv1.Event{
		agentEvent(1, streamv1.EventKind_EVENT_KIND_LLM_BEGIN),
		textStart(1, 0, "final"),
		agentEvent(1, streamv1.EventKind_EVENT_KIND_ANSWER),
		agentEvent(1, streamv1.EventKind_EVENT_KIND_LLM_END),
		end,
	}
	if got := fold(&transcript, redone...); !reflect.DeepEqual(got, make([]bool, 5)) {
		t.Fatalf("nothing superseded after: %v", got)
	}
	if text := transcript.Text(); text != "Hellofinal" {
		t.Fatalf("text: %q", text)
	}
	if transcript.Attempt() != 2 || !transcript.Ended() || transcript.Error() != nil {
		t.Fatalf("attempt %d, ended %v, error %v", transcript.Attempt(), transcript.Ended(), transcript.Error())
	}
	want := []TranscriptNode{
		{Idx: 0, Parts: []TranscriptPart{
			{PartKind: streamv1.PartKind_PART_KIND_TEXT, PartKindName: "text", EventIdx: proto.Uint32(0), Content: "Hello"},
			{PartKind: streamv1.PartKind_PART_KIND_TOOL_CALL, PartKindName: "tool-call", EventIdx: proto.Uint32(1),
				ToolName: "count_words", ToolCallID: "call-1", Args: map[string]any{"text": "a b"}},
			{PartKind: streamv1.PartKind_PART_KIND_TOOL_RETURN, PartKindName: "tool-return", Content: "2",
				ToolName: "count_words", ToolCallID: "call-1"},
		}},
		{Idx: 1, Parts: []TranscriptPart{
			{PartKind: streamv1.PartKind_PART_KIND_TEXT, PartKindName: "text", EventIdx: proto.Uint32(0), Content: "final"},
		}},
	}
	if nodes := transcript.Nodes(); !reflect.DeepEqual(nodes, want) {
		t.Fatalf("nodes:\n%+v\nwant\n%+v", nodes, want)
	}
}

func TestResumeFromNode0DropsEverything(t *testing.T) {
	var transcript Transcript
	fold(&transcript, concat([]*streamv1.Event{begin}, node0(t), node1Partial)...)
	if !transcript.Apply(resumedAt(0, 2)) {
		t.Fatal("the resume superseded every node")
	}
	if len(transcript.Nodes()) != 0 || transcript.Text() != "" || transcript.Attempt() != 2 {
		t.Fatalf("nodes %+v, text %q, attempt %d", transcript.Nodes(), transcript.Text(), transcript.Attempt())
	}
}

func TestResumeThatSupersedesNothingReturnsFalse(t *testing.T) {
	var transcript Transcript
	fold(&transcript, concat([]*streamv1.Event{begin}, node0(t))...)
	if transcript.Apply(resumedAt(1, 2)) {
		t.Fatal("no node 1 to supersede")
	}
	if transcript.Text() != "Hello" || transcript.Attempt() != 2 {
		t.Fatalf("text %q, attempt %d", transcript.Text(), transcript.Attempt())
	}
	var empty Transcript
	if empty.Attempt() != 1 || empty.Apply(resumedAt(0, 3)) {
		t.Fatal("an empty transcript: attempt 1, and a resume supersedes nothing")
	}
}

func TestDeltaOfAPartNeverSeenIsIgnored(t *testing.T) {
	var transcript Transcript // a listener that resumed after a cursor: the part's start came before it
	if fold(&transcript, textDelta(0, 0, "lo"), textDelta(2, 5, "lo"))[1] {
		t.Fatal("a delta supersedes nothing")
	}
	if len(transcript.Nodes()) != 0 || transcript.Text() != "" {
		t.Fatalf("nodes %+v, text %q", transcript.Nodes(), transcript.Text())
	}
	fold(&transcript, agentEvent(0, streamv1.EventKind_EVENT_KIND_LLM_BEGIN), textDelta(0, 3, "x"))
	if nodes := transcript.Nodes(); !reflect.DeepEqual(nodes, []TranscriptNode{{Idx: 0, Parts: []TranscriptPart{}}}) {
		t.Fatalf("nodes %+v", nodes)
	}
}

func TestPartsFollowEventIdxAndAPartSentAgainReplacesIt(t *testing.T) {
	var transcript Transcript
	fold(&transcript, agentEvent(0, streamv1.EventKind_EVENT_KIND_LLM_BEGIN), textStart(0, 1, "second"), textStart(0, 0, "first "), textDelta(0, 1, "!"))
	if text := transcript.Text(); text != "first second!" {
		t.Fatalf("text: %q", text)
	}
	transcript.Apply(textStart(0, 1, "again"))
	if text := transcript.Text(); text != "first again" {
		t.Fatalf("text: %q", text)
	}
}

func TestToolReturnsComeAfterTheResponsePartsInArrivalOrder(t *testing.T) {
	var transcript Transcript
	retried := agentEvent(0, streamv1.EventKind_EVENT_KIND_PART_START)
	retried.PartKind, retried.PartKindName, retried.Content, retried.Outcome = streamv1.PartKind_PART_KIND_TOOL_RETURN, "tool-return", proto.String("no such city"), streamv1.ToolOutcome_TOOL_OUTCOME_RETRIED
	prompt := agentEvent(0, streamv1.EventKind_EVENT_KIND_PART_START)
	prompt.PartKind, prompt.PartKindName = streamv1.PartKind_PART_KIND_OTHER, "retry-prompt"
	fold(&transcript, agentEvent(0, streamv1.EventKind_EVENT_KIND_LLM_BEGIN), retried, prompt, textStart(0, 0, "late"))
	var got []string
	for _, part := range transcript.Nodes()[0].Parts {
		got = append(got, part.PartKindName+" "+part.Outcome.String())
	}
	want := []string{"text TOOL_OUTCOME_UNSPECIFIED", "tool-return TOOL_OUTCOME_RETRIED", "retry-prompt TOOL_OUTCOME_UNSPECIFIED"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parts %v", got)
	}
}

func TestErrorEndBeginAndCustomEventsTouchNoNode(t *testing.T) {
	var transcript Transcript
	fold(&transcript, agentEvent(0, streamv1.EventKind_EVENT_KIND_LLM_BEGIN), textStart(0, 0, "Hi"))
	custom := &streamv1.Event{Type: streamv1.EventType_EVENT_TYPE_CUSTOM, TypeName: "progress", Origin: "developer", BodyJson: `{"pct": 50}`}
	failed := runtimeEvent(streamv1.EventType_EVENT_TYPE_ERROR, "error", `{"msg": "canceled"}`)
	if got := fold(&transcript, begin, custom, failed, end); !reflect.DeepEqual(got, make([]bool, 4)) {
		t.Fatalf("nothing superseded: %v", got)
	}
	if transcript.Text() != "Hi" || !transcript.Ended() || transcript.Attempt() != 1 ||
		!reflect.DeepEqual(transcript.Error(), map[string]any{"msg": "canceled"}) {
		t.Fatalf("text %q, ended %v, attempt %d, error %v", transcript.Text(), transcript.Ended(), transcript.Attempt(), transcript.Error())
	}
}
