// Command e2e checks the Go client end to end against a running server:
//
//	python clients/with_server.py go run ./cmd/e2e
//
// It reads PAIS_ADDRESS, PAIS_TOKEN (user 1:1) and PAIS_OTHER_TOKEN (user 1:2), hosted agents
// `weather`, `stalling` and `demo` (see tests/e2e/grpc_agents.py), and exits 1 if a check fails.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	streamv1 "github.com/pydantic-ai-stream/pydantic-ai-stream/clients/go/pydantic_ai_stream/v1"
	"github.com/pydantic-ai-stream/pydantic-ai-stream/clients/go/quickstart"
	"github.com/pydantic-ai-stream/pydantic-ai-stream/clients/go/streamclient"
)

var (
	address = os.Getenv("PAIS_ADDRESS")
	alice   *streamclient.Client
	bob     *streamclient.Client
	prefix  = fmt.Sprintf("go-e2e-%d-", time.Now().UnixNano())
)

func check(ok bool, format string, args ...any) {
	if !ok {
		panic(fmt.Errorf(format, args...))
	}
}

func must[T any](value T, err error) T {
	if err != nil {
		panic(err)
	}
	return value
}

func collect(ctx context.Context, client *streamclient.Client, session string, opts streamclient.ListenOptions) ([]*streamv1.Event, error) {
	var events []*streamv1.Event
	err := client.Listen(ctx, session, opts, func(event *streamv1.Event) error {
		events = append(events, event)
		return nil
	})
	return events, err
}

func ids(events []*streamv1.Event) []string {
	out := make([]string, len(events))
	for i, event := range events {
		out[i] = event.Id
	}
	return out
}

func runThenListen(ctx context.Context) {
	started := must(alice.Run(ctx, "weather", prefix+"1", "weather in Paris?"))
	events := must(collect(ctx, alice, prefix+"1", streamclient.ListenOptions{}))
	check(events[0].Type == streamv1.EventType_EVENT_TYPE_BEGIN && events[0].Id == started.BeginEventId, "begins with begin")
	check(events[len(events)-1].Type == streamv1.EventType_EVENT_TYPE_END, "ends with end")
	var text strings.Builder
	var call, ret, answer *streamv1.Event
	for _, event := range events {
		switch {
		case event.PartKind == streamv1.PartKind_PART_KIND_TEXT:
			text.WriteString(event.GetContent() + event.GetContentDelta())
		case event.PartKind == streamv1.PartKind_PART_KIND_TOOL_CALL:
			call = event
		case event.PartKind == streamv1.PartKind_PART_KIND_TOOL_RETURN:
			ret = event
		case event.Kind == streamv1.EventKind_EVENT_KIND_ANSWER:
			answer = event
		}
	}
	check(call != nil && call.GetToolName() == "get_weather" && call.GetToolCallId() == "call-1", "tool call: %v", call)
	check(reflect.DeepEqual(call.Args.AsMap(), map[string]any{"city": "Paris"}), "tool args: %v", call.Args.AsMap())
	check(ret != nil && ret.GetContent() == "sunny in Paris" && ret.GetToolCallId() == "call-1", "tool return: %v", ret)
	check(text.String() == "It is sunny.", "text: %q", text.String())
	check(answer != nil, "an answer event")

	resumed := must(collect(ctx, alice, prefix+"1", streamclient.ListenOptions{After: events[3].Id}))
	check(reflect.DeepEqual(ids(resumed), ids(events[4:])), "resume after an id: nothing lost or repeated")
}

func cancelMidStream(ctx context.Context) {
	session := prefix + "2"
	must(alice.Run(ctx, "stalling", session, "go"))
	var events []*streamv1.Event
	streaming, cancelledAt := make(chan struct{}), make(chan time.Time, 1)
	done := make(chan error, 1)
	go func() {
		done <- alice.Listen(ctx, session, streamclient.ListenOptions{}, func(event *streamv1.Event) error {
			events = append(events, event)
			if event.GetContentDelta() == "hard " {
				close(streaming)
			}
			return nil
		})
	}()
	<-streaming
	check(reflect.DeepEqual(must(alice.ListActive(ctx)), []string{session}), "ListActive shows the live run")
	check(!must(bob.Cancel(ctx, session)), "another user cannot cancel it")
	check(len(must(bob.ListActive(ctx))) == 0, "nor list it")
	cancelledAt <- time.Now()
	check(must(alice.Cancel(ctx, session)), "Cancel says a live run was cancelled")
	check(<-done == nil, "listen ends cleanly")
	elapsed := time.Since(<-cancelledAt)
	check(elapsed < 500*time.Millisecond, "the run ended promptly: %v", elapsed)
	last := events[len(events)-2:]
	body := must(streamclient.Body(last[0]))
	check(last[0].Type == streamv1.EventType_EVENT_TYPE_ERROR && body["msg"] == "canceled", "error canceled: %v", body)
	check(last[1].Type == streamv1.EventType_EVENT_TYPE_END, "then end")
	check(!must(alice.Cancel(ctx, session)), "nothing left to cancel")
	check(len(must(alice.ListActive(ctx))) == 0, "ListActive is empty after")
}

func wrongToken(ctx context.Context, conn *grpc.ClientConn) {
	_, err := streamclient.New(conn, "wrong").ListActive(ctx)
	check(status.Code(err) == codes.Unauthenticated, "UNAUTHENTICATED, got %v", err)
}

func quickstartExample(ctx context.Context) {
	var out strings.Builder
	check(quickstart.Run(ctx, address, os.Getenv("PAIS_TOKEN"), "demo", "count these four words", &out) == nil, "quickstart runs")
	check(strings.Contains(out.String(), "[tool] count_words(") && strings.Contains(out.String(), "You said 4 words"), "quickstart output: %q", out.String())
	fmt.Print(out.String() + "\n")
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn := must(grpc.Dial(address, grpc.WithInsecure()))
	defer conn.Close()
	alice, bob = streamclient.New(conn, os.Getenv("PAIS_TOKEN")), streamclient.New(conn, os.Getenv("PAIS_OTHER_TOKEN"))
	failed := 0
	for _, test := range []struct {
		name string
		run  func(context.Context)
	}{
		{"run then listen: begin ... end with typed fields; resume after an id", runThenListen},
		{"cancel mid-stream: error then end; another user cannot see or cancel", cancelMidStream},
		{"a wrong bearer token is UNAUTHENTICATED", func(ctx context.Context) { wrongToken(ctx, conn) }},
		{"the quickstart example streams the demo agent's answer", quickstartExample},
	} {
		start := time.Now()
		err := func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = errors.New(fmt.Sprint(r))
				}
			}()
			test.run(ctx)
			return nil
		}()
		if err != nil {
			failed++
			fmt.Printf("FAIL %s: %v\n", test.name, err)
		} else {
			fmt.Printf("ok   %s (%v)\n", test.name, time.Since(start).Round(time.Millisecond))
		}
	}
	if failed > 0 {
		os.Exit(1)
	}
}
