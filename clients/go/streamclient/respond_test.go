package streamclient

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	streamv1 "github.com/pydantic-ai-stream/pydantic-ai-stream/clients/go/pydantic_ai_stream/v1"
)

func TestInputCallsOfAnInputRequiredEvent(t *testing.T) {
	args, _ := structpb.NewStruct(map[string]any{"name": "staging"})
	event := agentEvent(0, streamv1.EventKind_EVENT_KIND_INPUT_REQUIRED)
	event.Calls = []*streamv1.DeferredCall{
		{ToolCallId: "c1", ToolName: "drop_db", Args: args, Kind: streamv1.DeferredCallKind_DEFERRED_CALL_KIND_APPROVAL},
		{ToolCallId: "c2", ToolName: "page", Kind: streamv1.DeferredCallKind_DEFERRED_CALL_KIND_EXTERNAL},
	}
	want := []InputCall{
		{ToolCallID: "c1", ToolName: "drop_db", Args: map[string]any{"name": "staging"}, Kind: streamv1.DeferredCallKind_DEFERRED_CALL_KIND_APPROVAL},
		{ToolCallID: "c2", ToolName: "page", Args: map[string]any{}, Kind: streamv1.DeferredCallKind_DEFERRED_CALL_KIND_EXTERNAL},
	}
	if got := InputCalls(event); !reflect.DeepEqual(got, want) {
		t.Fatalf("InputCalls = %+v, want %+v", got, want)
	}
	if got := InputCalls(agentEvent(0, streamv1.EventKind_EVENT_KIND_PART_START)); got != nil {
		t.Fatalf("another event waits on nothing, got %+v", got)
	}
}

func TestAnswers(t *testing.T) {
	override, err := ApproveWith("c1", map[string]any{"name": "dev"})
	if err != nil {
		t.Fatal(err)
	}
	value, err := ExternalResult("c2", map[string]any{"ack": true, "n": 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ExternalResult("c2", make(chan int)); err == nil {
		t.Fatal("a value that is not JSON is refused")
	}
	for _, c := range []struct {
		got  *streamv1.ToolAnswer
		want string
	}{
		{Approve("c1"), `tool_call_id:"c1" approval:{approved:true}`},
		{override, `tool_call_id:"c1" approval:{approved:true override_args:{fields:{key:"name" value:{string_value:"dev"}}}}`},
		{Deny("c1", "no"), `tool_call_id:"c1" approval:{denial_message:"no"}`},
		{value, `tool_call_id:"c2" result:{value:{struct_value:{fields:{key:"ack" value:{bool_value:true}} fields:{key:"n" value:{number_value:2}}}}}`},
		{Retry("c2", "down"), `tool_call_id:"c2" result:{retry:"down"}`},
	} {
		want := &streamv1.ToolAnswer{}
		if err := prototext.Unmarshal([]byte(c.want), want); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(c.got, want) {
			t.Errorf("got %v, want %v", c.got, want)
		}
	}
}
