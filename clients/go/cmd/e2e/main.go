// Command e2e checks the Go client end to end against a running server:
//
//	python clients/with_server.py go run ./cmd/e2e
//
// It reads PAIS_ADDRESS, PAIS_TOKEN (user 1:1) and PAIS_OTHER_TOKEN (user 1:2), hosted agents
// `weather`, `stalling`, `echo`, `ops` and `demo` (see tests/e2e/grpc_agents.py), and exits 1 if a check fails.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

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

func text(events []*streamv1.Event) string {
	var out strings.Builder
	for _, event := range events {
		out.WriteString(event.GetContent() + event.GetContentDelta())
	}
	return out.String()
}

func silenceLimit(ctx context.Context) {
	session := prefix + "3"
	must(alice.Run(ctx, "stalling", session, "go"))
	started := time.Now()
	events, err := collect(ctx, alice, session, streamclient.ListenOptions{TimeoutSeconds: 1})
	check(status.Code(err) == codes.DeadlineExceeded, "DeadlineExceeded, got %v", err)
	check(strings.Contains(status.Convert(err).Message(), "resume after"), "says where to resume: %v", err)
	check(time.Since(started) < 5*time.Second, "not retried: %v", time.Since(started))
	check(text(events) == "thinking hard ", "the events so far first: %q", text(events))
	check(reflect.DeepEqual(must(alice.ListActive(ctx)), []string{session}), "the run itself goes on")
	check(must(alice.Cancel(ctx, session)), "then it is cancelled")
}

func resumeAfterEnd(ctx context.Context) {
	session := prefix + "4"
	must(alice.Run(ctx, "weather", session, "hi"))
	events := must(collect(ctx, alice, session, streamclient.ListenOptions{}))
	started := time.Now()
	resumed, err := collect(ctx, alice, session, streamclient.ListenOptions{After: events[len(events)-1].Id, WaitSeconds: 3})
	check(err == nil && len(resumed) == 0, "nothing, no error: %v %v", resumed, err)
	check(time.Since(started) < 500*time.Millisecond, "at once: %v", time.Since(started))
}

func callbackErrorStops(ctx context.Context) {
	session := prefix + "5"
	must(alice.Run(ctx, "weather", session, "hi"))
	mine, calls := errors.New("mine"), 0
	err := alice.Listen(ctx, session, streamclient.ListenOptions{}, func(*streamv1.Event) error {
		calls++
		if calls == 2 {
			return mine
		}
		return nil
	})
	check(err == mine && calls == 2, "fn's error is returned, not retried: %v after %d events", err, calls)
}

// front is a gRPC server in front of the real one whose Listen closes OK after eventsPerCall
// events, `end` or not, as an older server's timeout or a proxy may (a batch is cut short to what
// is left); with refusesBatches, it refuses MaxBatchEvents as a server older than that field does.
type front struct {
	streamv1.UnimplementedAgentStreamServiceServer
	upstream       *streamclient.Client
	eventsPerCall  int
	refusesBatches bool
	calls          int32
	batches        int32 // responses with an `events` payload (a batch) forwarded
	mu             sync.Mutex
	asked          []uint32 // each Listen call's MaxBatchEvents, in order
}

func (f *front) askedSoFar() []uint32 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]uint32(nil), f.asked...)
}

func (f *front) Listen(request *streamv1.ListenRequest, stream streamv1.AgentStreamService_ListenServer) error {
	atomic.AddInt32(&f.calls, 1)
	f.mu.Lock()
	f.asked = append(f.asked, request.MaxBatchEvents)
	f.mu.Unlock()
	if f.refusesBatches && request.MaxBatchEvents > 0 {
		return status.Error(codes.InvalidArgument, "request has fields this server does not know")
	}
	ctx := metadata.AppendToOutgoingContext(stream.Context(), "authorization", "Bearer "+os.Getenv("PAIS_TOKEN"))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the upstream call
	upstream, err := f.upstream.RPC.Listen(ctx, request)
	if err != nil {
		return err
	}
	for sent := 0; sent < f.eventsPerCall; {
		response, err := upstream.Recv()
		if err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if batch := response.GetEvents(); batch != nil {
			batch.Events = batch.Events[:min(len(batch.Events), f.eventsPerCall-sent)]
			sent += len(batch.Events)
			atomic.AddInt32(&f.batches, 1)
		} else if response.GetEvent() != nil {
			sent++
		}
		if err := stream.Send(response); err != nil {
			return err
		}
	}
	return nil
}

// startFront serves f on a free loopback port; the returned client calls it, stop ends both.
func startFront(f *front) (client *streamclient.Client, stop func()) {
	listener := must(net.Listen("tcp", "127.0.0.1:0"))
	server := grpc.NewServer()
	streamv1.RegisterAgentStreamServiceServer(server, f)
	go server.Serve(listener)
	conn := must(grpc.Dial(listener.Addr().String(), grpc.WithInsecure()))
	return streamclient.New(conn, ""), func() {
		conn.Close()
		server.Stop()
	}
}

func closedBeforeEnd(ctx context.Context) {
	session := prefix + "6"
	must(alice.Run(ctx, "weather", session, "hi"))
	full := must(collect(ctx, alice, session, streamclient.ListenOptions{}))
	f := &front{upstream: alice, eventsPerCall: 3}
	client, stop := startFront(f)
	defer stop()
	events, err := collect(ctx, client, session, streamclient.ListenOptions{Backoff: 10 * time.Millisecond})
	check(err == nil && reflect.DeepEqual(ids(events), ids(full)), "every event once: %v %v", ids(events), err)
	calls := int(atomic.LoadInt32(&f.calls))
	check(calls == (len(full)+2)/3, "one call per 3 events, each resumed: %d calls, %d events", calls, len(full))

	f.eventsPerCall = 0
	atomic.StoreInt32(&f.calls, 0)
	_, err = collect(ctx, client, session, streamclient.ListenOptions{Retries: 2, Backoff: 10 * time.Millisecond})
	check(status.Code(err) == codes.Unavailable, "from the start, closing OK with nothing: Unavailable once retries are spent, got %v", err)
	calls = int(atomic.LoadInt32(&f.calls))
	check(calls == 3, "after 2 retries: %d calls", calls)
}

func min(a, b int) int {
	if a < b {
		return a
	}
	return b
}

// longPrompt is what the `echo` agent's long runs stream back, a word a token: a late listener is far behind.
var longPrompt = func() string {
	words := make([]string, 600)
	for i := range words {
		words[i] = "w" + strconv.Itoa(i)
	}
	return strings.Join(words, " ")
}()

// longRun starts a long run on session and returns its events once it ended, listened to one a response.
func longRun(ctx context.Context, session string) []*streamv1.Event {
	must(alice.Run(ctx, "echo", session, longPrompt))
	asAlice := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+os.Getenv("PAIS_TOKEN"))
	stream := must(alice.RPC.Listen(asAlice, &streamv1.ListenRequest{SessionId: session}))
	var events []*streamv1.Event
	for {
		response, err := stream.Recv()
		if err == io.EOF {
			break
		}
		check(err == nil, "listen: %v", err)
		check(response.GetEvents() == nil, "a Listen without MaxBatchEvents never gets a batch")
		if event := response.GetEvent(); event != nil {
			events = append(events, event)
		}
	}
	check(len(events) > 0 && events[len(events)-1].Type == streamv1.EventType_EVENT_TYPE_END, "the run ended")
	return events
}

// increasing says whether stream entry ids ("ms-seq") strictly increase.
func increasing(ids []string) bool {
	key := func(id string) (ms, seq uint64) {
		parts := strings.SplitN(id, "-", 2)
		ms = must(strconv.ParseUint(parts[0], 10, 64))
		seq = must(strconv.ParseUint(parts[1], 10, 64))
		return ms, seq
	}
	for i := 1; i < len(ids); i++ {
		ms0, seq0 := key(ids[i-1])
		ms1, seq1 := key(ids[i])
		if ms1 < ms0 || (ms1 == ms0 && seq1 <= seq0) {
			return false
		}
	}
	return true
}

func lateListenerGetsBatches(ctx context.Context) {
	session := prefix + "9"
	single := longRun(ctx, session)
	deltas := 0
	for _, event := range single {
		if event.Kind == streamv1.EventKind_EVENT_KIND_PART_DELTA {
			deltas++
		}
	}
	check(deltas >= 599, "the run streams a delta a word: %d", deltas)
	f := &front{upstream: alice, eventsPerCall: math.MaxInt}
	client, stop := startFront(f)
	defer stop()
	var transcript streamclient.Transcript
	events := must(collect(ctx, client, session, streamclient.ListenOptions{}))
	check(reflect.DeepEqual(f.askedSoFar(), []uint32{streamclient.MaxBatchEvents}), "one Listen, asking for batches: %v", f.askedSoFar())
	check(atomic.LoadInt32(&f.batches) >= 2, "the catch-up spans several batches: %d", atomic.LoadInt32(&f.batches))
	check(reflect.DeepEqual(ids(events), ids(single)), "every event once, in order: %d events, %d unbatched", len(events), len(single))
	check(increasing(ids(events)), "ids strictly increase")
	for i, event := range events {
		check(proto.Equal(event, single[i]), "event %d as unbatched: %v", i, event)
		transcript.Apply(event)
	}
	check(transcript.Ended() && transcript.Text() == longPrompt, "its text is the prompt: %q", transcript.Text())

	cancelled, cancel := context.WithCancel(ctx)
	defer cancel()
	got := 0
	err := client.Listen(cancelled, session, streamclient.ListenOptions{}, func(*streamv1.Event) error {
		if got++; got == 3 {
			cancel() // mid-batch: fn gets no more
		}
		return nil
	})
	check(status.Code(err) == codes.Canceled && got == 3, "cancelled after 3 events: %v after %d", err, got)
}

func batchCutShort(ctx context.Context) {
	session := prefix + "10"
	single := longRun(ctx, session)
	f := &front{upstream: alice, eventsPerCall: 100} // 100 events a call: batches cut short
	client, stop := startFront(f)
	defer stop()
	events := must(collect(ctx, client, session, streamclient.ListenOptions{Backoff: 10 * time.Millisecond}))
	check(reflect.DeepEqual(ids(events), ids(single)), "every event once, in order: %d events, %d unbatched", len(events), len(single))
	calls := int(atomic.LoadInt32(&f.calls))
	check(calls == (len(single)+99)/100, "each call resumed after the last event fn got: %d calls, %d events", calls, len(single))
	check(int(atomic.LoadInt32(&f.batches)) >= calls-1, "in batches: %d", atomic.LoadInt32(&f.batches))
	for _, most := range f.askedSoFar() {
		check(most == streamclient.MaxBatchEvents, "each call asks for batches: %v", f.askedSoFar())
	}
}

func olderServer(ctx context.Context) {
	session := prefix + "11"
	single := longRun(ctx, session)
	f := &front{upstream: alice, eventsPerCall: math.MaxInt, refusesBatches: true}
	client, stop := startFront(f)
	defer stop()
	for i := 0; i < 2; i++ {
		events := must(collect(ctx, client, session, streamclient.ListenOptions{}))
		check(reflect.DeepEqual(ids(events), ids(single)), "every event once, in order: %d events", len(events))
	}
	check(reflect.DeepEqual(f.askedSoFar(), []uint32{streamclient.MaxBatchEvents, 0, 0}), "asked again without, then remembered: %v", f.askedSoFar())
	check(atomic.LoadInt32(&f.batches) == 0, "no batch")
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

func demoTranscript(ctx context.Context) {
	session := prefix + "7"
	must(alice.Run(ctx, "demo", session, "count these four words"))
	events := must(collect(ctx, alice, session, streamclient.ListenOptions{}))
	var transcript streamclient.Transcript
	var text strings.Builder
	for _, event := range events {
		check(!transcript.Apply(event), "no resume: nothing superseded, yet %v did", event)
		if event.PartKind == streamv1.PartKind_PART_KIND_TEXT {
			text.WriteString(event.GetContent() + event.GetContentDelta())
		}
	}
	check(transcript.Text() == text.String(), "transcript text %q, events' %q", transcript.Text(), text.String())
	check(strings.HasPrefix(text.String(), "You said 4 words at "), "text: %q", text.String())
	check(transcript.Ended() && transcript.Attempt() == 1 && transcript.Error() == nil, "ended, attempt 1, no error")
	parts := transcript.Nodes()[0].Parts
	check(len(parts) == 3 && parts[0].Content == "The user said something; let me count its words first.", "thinking: %+v", parts)
	check(parts[1].ToolName == "count_words" && reflect.DeepEqual(parts[1].Args, map[string]any{"text": "count these four words"}), "tool call: %+v", parts[1])
	check(parts[2].ToolCallID == "count-1" && parts[2].Content == "4", "tool return: %+v", parts[2])
}

// eventsOfRun returns the events of the session's run runID: Listen gives the current run, so it
// listens again until that is runID, for up to `within`.
func eventsOfRun(ctx context.Context, session, runID string, within time.Duration) []*streamv1.Event {
	for deadline := time.Now().Add(within); time.Now().Before(deadline); {
		events := must(collect(ctx, alice, session, streamclient.ListenOptions{}))
		if must(streamclient.Body(events[0]))["run_id"] == runID {
			return events
		}
	}
	panic(fmt.Errorf("run %s did not begin within %v", runID, within))
}

func enqueueBehindBusy(ctx context.Context) {
	session := prefix + "8"
	must(alice.Run(ctx, "stalling", session, "go"))
	streaming := errors.New("streaming")
	err := alice.Listen(ctx, session, streamclient.ListenOptions{}, func(event *streamv1.Event) error {
		if event.GetContentDelta() == "hard " {
			return streaming
		}
		return nil
	})
	check(err == streaming, "the first run streams: %v", err)
	enqueue := streamclient.RunOptions{RunID: session + "-next", IfBusy: streamv1.BusyPolicy_BUSY_POLICY_ENQUEUE}
	waiting := must(alice.RunWith(ctx, "weather", session, "weather?", enqueue))
	check(waiting.RunId == enqueue.RunID && waiting.BeginEventId == "" && waiting.Waiting, "waiting, no begin yet: %v", waiting)
	again := must(alice.RunWith(ctx, "weather", session, "weather?", enqueue))
	check(again.RunId == enqueue.RunID && again.BeginEventId == "" && again.Waiting, "a retry is the same run: %v", again)
	for _, ifBusy := range []streamv1.BusyPolicy{streamv1.BusyPolicy_BUSY_POLICY_UNSPECIFIED, streamv1.BusyPolicy_BUSY_POLICY_REJECT} {
		_, err := alice.RunWith(ctx, "weather", session, "weather?", streamclient.RunOptions{IfBusy: ifBusy})
		check(status.Code(err) == codes.AlreadyExists, "%v: AlreadyExists, got %v", ifBusy, err)
	}
	check(must(alice.Cancel(ctx, session)), "the first run is cancelled")
	events := eventsOfRun(ctx, session, enqueue.RunID, 10*time.Second)
	begin := must(streamclient.Body(events[0]))
	check(reflect.DeepEqual(begin, map[string]any{"session_id": session, "run_id": enqueue.RunID, "agent": "weather", "user_prompt": "weather?"}), "its begin: %v", begin)
	check(events[len(events)-1].Type == streamv1.EventType_EVENT_TYPE_END, "its end")
	var answer strings.Builder
	for _, event := range events {
		check(event.Type != streamv1.EventType_EVENT_TYPE_ERROR, "no error: %s", event.BodyJson)
		if event.PartKind == streamv1.PartKind_PART_KIND_TEXT {
			answer.WriteString(event.GetContent() + event.GetContentDelta())
		}
	}
	check(answer.String() == "It is sunny.", "its answer: %q", answer.String())
}

// waitingRun starts a run of the `ops` agent, listens until its `input_required` event, and waits until
// ListActive lists it as waiting for input; it returns the run id and that event.
func waitingRun(ctx context.Context, session string) (string, *streamv1.Event) {
	runID := must(alice.Run(ctx, "ops", session, "clean up")).RunId
	var waiting *streamv1.Event
	stop := errors.New("waits")
	err := alice.Listen(ctx, session, streamclient.ListenOptions{}, func(event *streamv1.Event) error {
		if event.Kind == streamv1.EventKind_EVENT_KIND_INPUT_REQUIRED {
			waiting = event
			return stop
		}
		return nil
	})
	check(err == stop, "the run waits for input: %v", err)
	for deadline := time.Now().Add(20 * time.Second); ; {
		authorized := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+os.Getenv("PAIS_TOKEN"))
		sessions := must(alice.RPC.ListActive(authorized, &streamv1.ListActiveRequest{})).Sessions
		for _, listed := range sessions {
			if listed.SessionId == session && listed.RunId == runID && listed.State == streamv1.RunState_RUN_STATE_WAITING_FOR_INPUT {
				return runID, waiting
			}
		}
		check(time.Now().Before(deadline), "ListActive lists the run as waiting for input: %v", sessions)
		time.Sleep(20 * time.Millisecond)
	}
}

// returnsAndText returns the tool returns (call id -> content, outcome) and the text parts of events.
func returnsAndText(events []*streamv1.Event) (map[string]string, map[string]streamv1.ToolOutcome, string) {
	contents, outcomes := map[string]string{}, map[string]streamv1.ToolOutcome{}
	var answer strings.Builder
	for _, event := range events {
		switch event.PartKind {
		case streamv1.PartKind_PART_KIND_TOOL_RETURN:
			contents[event.GetToolCallId()], outcomes[event.GetToolCallId()] = event.GetContent(), event.Outcome
		case streamv1.PartKind_PART_KIND_TEXT:
			answer.WriteString(event.GetContent() + event.GetContentDelta())
		}
	}
	return contents, outcomes, answer.String()
}

func answerWaitingRun(ctx context.Context) {
	session := prefix + "w1"
	runID, waiting := waitingRun(ctx, session)
	calls := streamclient.InputCalls(waiting)
	check(reflect.DeepEqual(calls, []streamclient.InputCall{
		{ToolCallID: "c1", ToolName: "drop_db", Args: map[string]any{"name": "staging"}, Kind: streamv1.DeferredCallKind_DEFERRED_CALL_KIND_APPROVAL},
		{ToolCallID: "c2", ToolName: "page", Args: map[string]any{"msg": "db"}, Kind: streamv1.DeferredCallKind_DEFERRED_CALL_KIND_EXTERNAL},
	}), "the calls: %+v", calls)
	check(waiting.DeadlineUnixMs > uint64(time.Now().UnixMilli()), "a deadline ahead: %d", waiting.DeadlineUnixMs)
	held := must(alice.Respond(ctx, session, runID, streamclient.Approve("c1")))
	check(!held.Continued && reflect.DeepEqual(held.PendingCallIds, []string{"c2"}), "held until c2 has an answer: %v", held)
	result := must(streamclient.ExternalResult("c2", map[string]any{"ack": true}))
	check(must(alice.Respond(ctx, session, runID, result)).Continued, "the run goes on")
	rest := must(collect(ctx, alice, session, streamclient.ListenOptions{After: waiting.Id}))
	contents, _, answer := returnsAndText(rest)
	check(reflect.DeepEqual(contents, map[string]string{"c1": "dropped staging", "c2": `{"ack": true}`}), "the returns: %v", contents)
	check(answer == "done: drop_db=dropped staging; page={'ack': True}", "the answer: %q", answer)
	check(rest[len(rest)-1].Type == streamv1.EventType_EVENT_TYPE_END, "then end")
	again := must(alice.Respond(ctx, session, runID, result))
	check(again.Continued && len(again.PendingCallIds) == 0, "a retry answers as the first did: %v", again)
}

func denyWaitingRun(ctx context.Context) {
	session := prefix + "w2"
	runID, waiting := waitingRun(ctx, session)
	_, err := bob.Respond(ctx, session, runID, streamclient.Approve("c1"))
	check(status.Code(err) == codes.NotFound, "another user's answer: NotFound, got %v", err)
	_, err = alice.Respond(ctx, session, runID, streamclient.Approve("c2"))
	check(status.Code(err) == codes.InvalidArgument, "an approval of an external call: InvalidArgument, got %v", err)
	check(must(alice.Respond(ctx, session, runID, streamclient.Deny("c1", "not on Fridays"), streamclient.Retry("c2", "pager down"))).Continued, "the run goes on")
	rest := must(collect(ctx, alice, session, streamclient.ListenOptions{After: waiting.Id}))
	_, outcomes, answer := returnsAndText(rest)
	check(outcomes["c1"] == streamv1.ToolOutcome_TOOL_OUTCOME_DENIED, "c1 denied: %v", outcomes)
	check(strings.HasPrefix(answer, "done: drop_db=not on Fridays; page=pager down"), "the model saw both: %q", answer)
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
		{"a silence limit ends the listen with DeadlineExceeded after the events so far", silenceLimit},
		{"a listen resumed after end returns at once with nothing", resumeAfterEnd},
		{"an error from fn stops the listen and is returned, not retried", callbackErrorStops},
		{"a listen that closes OK before end is resumed; from the start with nothing, it fails", closedBeforeEnd},
		{"a wrong bearer token is UNAUTHENTICATED", func(ctx context.Context) { wrongToken(ctx, conn) }},
		{"the quickstart example streams the demo agent's answer", quickstartExample},
		{"a transcript of the demo agent's run holds its text, tool call and return", demoTranscript},
		{"a run enqueued on a busy session waits, starts when the session's run ended, and runs", enqueueBehindBusy},
		{"a late listener of a long run gets its events in batches, given once each, in order", lateListenerGetsBatches},
		{"a listen closed partway through a batch resumes after the last event fn got", batchCutShort},
		{"a server that refuses MaxBatchEvents is asked again without it, and the client remembers", olderServer},
		{"a waiting run: an approval and an external result answered with Respond, the run goes on", answerWaitingRun},
		{"a denial and a retry reach the model; another user's answer is NotFound", denyWaitingRun},
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
