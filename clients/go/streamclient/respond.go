package streamclient

import (
	"context"

	"google.golang.org/protobuf/types/known/structpb"

	streamv1 "github.com/pydantic-ai-stream/pydantic-ai-stream/clients/go/pydantic_ai_stream/v1"
)

// Respond answers the deferred tool calls the session's run runID waits on (Approve, Deny,
// ExternalResult, Retry). Once every call has an answer the run goes on (Continued), else
// PendingCallIds says which still need one. Safe to retry: a retry answers as the first call did.
func (c *Client) Respond(ctx context.Context, sessionID, runID string, answers ...*streamv1.ToolAnswer) (*streamv1.RespondResponse, error) {
	return c.RPC.Respond(c.auth(ctx), &streamv1.RespondRequest{SessionId: sessionID, RunId: runID, Answers: answers})
}

// InputCall is a call an `input_required` event waits on, with its arguments decoded.
type InputCall struct {
	ToolCallID string
	ToolName   string
	Args       map[string]any
	// DEFERRED_CALL_KIND_APPROVAL: answer with Approve or Deny; _EXTERNAL, _QUESTION: ExternalResult or Retry.
	Kind streamv1.DeferredCallKind
}

// InputCalls returns the calls an EVENT_KIND_INPUT_REQUIRED event waits on (none for another event).
func InputCalls(event *streamv1.Event) []InputCall {
	if event.Kind != streamv1.EventKind_EVENT_KIND_INPUT_REQUIRED {
		return nil
	}
	calls := make([]InputCall, 0, len(event.Calls))
	for _, call := range event.Calls {
		args := call.Args.AsMap() // a nil Struct gives an empty map
		calls = append(calls, InputCall{ToolCallID: call.ToolCallId, ToolName: call.ToolName, Args: args, Kind: call.Kind})
	}
	return calls
}

// Approve is an approval: the tool runs with the model's arguments.
func Approve(toolCallID string) *streamv1.ToolAnswer {
	return approval(toolCallID, &streamv1.Approval{Approved: true})
}

// ApproveWith is an approval with arguments the tool runs with instead of the model's; it fails on
// a value that is not JSON (as structpb.NewStruct does).
func ApproveWith(toolCallID string, overrideArgs map[string]any) (*streamv1.ToolAnswer, error) {
	args, err := structpb.NewStruct(overrideArgs)
	if err != nil {
		return nil, err
	}
	return approval(toolCallID, &streamv1.Approval{Approved: true, OverrideArgs: args}), nil
}

// Deny is a denial: the tool does not run; the model is told message.
func Deny(toolCallID, message string) *streamv1.ToolAnswer {
	return approval(toolCallID, &streamv1.Approval{Approved: false, DenialMessage: message})
}

func approval(toolCallID string, approval *streamv1.Approval) *streamv1.ToolAnswer {
	return &streamv1.ToolAnswer{ToolCallId: toolCallID, Answer: &streamv1.ToolAnswer_Approval{Approval: approval}}
}

// ExternalResult is the result of an external call (or the answer to a question): value, any JSON
// value (nil, bool, numbers, string, []any, map[string]any); it fails on another type.
func ExternalResult(toolCallID string, value any) (*streamv1.ToolAnswer, error) {
	v, err := structpb.NewValue(value)
	if err != nil {
		return nil, err
	}
	return result(toolCallID, &streamv1.ExternalResult{Outcome: &streamv1.ExternalResult_Value{Value: v}}), nil
}

// Retry answers an external call that failed: the model sees message as a retry prompt for it.
func Retry(toolCallID, message string) *streamv1.ToolAnswer {
	return result(toolCallID, &streamv1.ExternalResult{Outcome: &streamv1.ExternalResult_Retry{Retry: message}})
}

func result(toolCallID string, result *streamv1.ExternalResult) *streamv1.ToolAnswer {
	return &streamv1.ToolAnswer{ToolCallId: toolCallID, Answer: &streamv1.ToolAnswer_Result{Result: result}}
}
