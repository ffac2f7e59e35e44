// Package streamclient is a small client for the pydantic-ai-stream gRPC service: start agent
// runs, stream their events (resuming after the last event id when the connection drops), cancel
// runs and list live sessions. The generated stubs are in package streamv1.
package streamclient

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	streamv1 "github.com/pydantic-ai-stream/pydantic-ai-stream/clients/go/pydantic_ai_stream/v1"
)

// MaxBatchEvents is the most events Listen asks the server to send in one response when it is behind
// (fn still gets them one by one).
const MaxBatchEvents = 256

// Client calls the service as the user its bearer token identifies.
type Client struct {
	// RPC is the generated client, for calls the wrapper does not cover.
	RPC       streamv1.AgentStreamServiceClient
	token     string
	unbatched atomic.Bool // the server refused ListenRequest.MaxBatchEvents (it is older): Listen without it
}

// New returns a client over conn; token is sent as `authorization: Bearer <token>` ("" sends none).
func New(conn grpc.ClientConnInterface, token string) *Client {
	return &Client{RPC: streamv1.NewAgentStreamServiceClient(conn), token: token}
}

func (c *Client) auth(ctx context.Context) context.Context {
	if c.token == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
}

// Run starts a run of a hosted agent on a session; it returns once the run's `begin` is in the stream.
// It is RunWith with the zero RunOptions.
func (c *Client) Run(ctx context.Context, agent, sessionID, prompt string) (*streamv1.RunResponse, error) {
	return c.RunWith(ctx, agent, sessionID, prompt, RunOptions{})
}

// RunOptions tune RunWith, as ListenOptions tune Listen; the zero value is Run's: a generated run id,
// and AlreadyExists if the session has a queued or live run.
type RunOptions struct {
	RunID  string              // your own run id: a retry with it returns the same run, under every policy
	IfBusy streamv1.BusyPolicy // if the session has a queued or live run (0: BUSY_POLICY_REJECT)
}

// RunWith is Run with options. With IfBusy BUSY_POLICY_ENQUEUE on a busy session it returns once the
// run waits behind the session's run: the response's Waiting is true and its BeginEventId empty.
func (c *Client) RunWith(ctx context.Context, agent, sessionID, prompt string, opts RunOptions) (*streamv1.RunResponse, error) {
	return c.RPC.Run(c.auth(ctx), &streamv1.RunRequest{
		Agent:     agent,
		SessionId: sessionID,
		Prompt:    prompt,
		RunId:     opts.RunID,
		IfBusy:    opts.IfBusy,
	})
}

// ListenOptions tune Listen; the zero value listens from the current run's `begin` with the
// server's defaults and reconnects up to 5 times in a row, 200 ms apart, doubling.
type ListenOptions struct {
	After          string        // resume strictly after this event id
	WaitSeconds    uint32        // for the session's stream to appear, then NotFound (0: server default, 3)
	TimeoutSeconds uint32        // of silence before Listen fails with DeadlineExceeded (0: no limit)
	Retries        int           // reconnects in a row before giving up (0: 5; negative: none)
	Backoff        time.Duration // before the first reconnect (0: 200 ms)
}

// retryable says whether a Listen failure is the connection's (resume) rather than the call's.
func retryable(ctx context.Context, err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.Internal, codes.Unknown:
		return true
	case codes.Canceled:
		return ctx.Err() == nil // a cut connection, not the caller cancelling
	}
	return false
}

// Listen calls fn with each event of the session, up to and including `end`. A dropped stream is
// resumed after the last event seen, so fn sees every event once. It returns nil only after `end`,
// or at once when opts.After is `end`'s id. A limit that ends the Listen early is returned as its
// status error: DeadlineExceeded (TimeoutSeconds), NotFound (WaitSeconds), OutOfRange (a trimmed
// cursor). An error from fn stops it and is returned as is. Events that are ready together come in
// one response (up to MaxBatchEvents); a server that does not batch is asked without it.
func (c *Client) Listen(ctx context.Context, sessionID string, opts ListenOptions, fn func(*streamv1.Event) error) error {
	retries, backoff := opts.Retries, opts.Backoff
	if retries == 0 {
		retries = 5
	}
	if backoff == 0 {
		backoff = 200 * time.Millisecond
	}
	after, attempt, delivered := opts.After, 0, false
	var stopped error // fn's own: never retried
	for {
		batched := !c.unbatched.Load()
		err := c.listenOnce(ctx, sessionID, after, batched, opts, func(event *streamv1.Event) error {
			after, attempt, delivered = event.Id, 0, true // the last event fn got, however far into a batch
			stopped = fn(event)
			return stopped
		})
		switch {
		case stopped != nil:
			return stopped
		case batched && refusesBatches(err):
			c.unbatched.Store(true) // a server older than MaxBatchEvents: ask it again without
			continue
		case errors.Is(err, errStop):
			return nil
		case err == io.EOF && after != "" && !delivered:
			return nil // resumed after `end`: the server closes such a Listen at once
		case err == io.EOF:
			// Closed OK before `end` (an older server's timeout, a proxy): not the run's end, so resumed.
			err = status.Errorf(codes.Unavailable, "Listen closed before `end` (last event: %q)", after)
		}
		if !retryable(ctx, err) || attempt >= retries {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff << attempt):
		}
		attempt++
	}
}

var errStop = errors.New("end of run")

// refusesBatches says whether a server that does not know ListenRequest.MaxBatchEvents refused it.
func refusesBatches(err error) bool {
	s := status.Convert(err)
	return s.Code() == codes.InvalidArgument && strings.Contains(s.Message(), "fields this server does not know")
}

func (c *Client) listenOnce(ctx context.Context, sessionID, after string, batched bool, opts ListenOptions, fn func(*streamv1.Event) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the call (and its server-side reads) however this returns
	request := &streamv1.ListenRequest{
		SessionId:      sessionID,
		AfterEventId:   after,
		WaitSeconds:    opts.WaitSeconds,
		TimeoutSeconds: opts.TimeoutSeconds,
	}
	if batched {
		request.MaxBatchEvents = MaxBatchEvents
	}
	stream, err := c.RPC.Listen(c.auth(ctx), request)
	if err != nil {
		return err
	}
	for {
		response, err := stream.Recv()
		if err != nil {
			return err // io.EOF: closed OK
		}
		for _, event := range eventsOf(response) {
			if ctx.Err() != nil {
				break // the caller cancelled mid-batch: the call's own error comes next
			}
			if err := fn(event); err != nil {
				return err
			}
			if event.Type == streamv1.EventType_EVENT_TYPE_END {
				return errStop
			}
		}
	}
}

// eventsOf returns a Listen response's events: one, several that were ready together (a batch), or
// none (a heartbeat).
func eventsOf(response *streamv1.ListenResponse) []*streamv1.Event {
	if event := response.GetEvent(); event != nil {
		return []*streamv1.Event{event}
	}
	return response.GetEvents().GetEvents()
}

// Cancel stops the session's live run, wherever it runs; true if there was one.
func (c *Client) Cancel(ctx context.Context, sessionID string) (bool, error) {
	response, err := c.RPC.Cancel(c.auth(ctx), &streamv1.CancelRequest{SessionId: sessionID})
	return response.GetCancelled(), err
}

// ListActive returns the session ids of the caller's live runs.
func (c *Client) ListActive(ctx context.Context) ([]string, error) {
	response, err := c.RPC.ListActive(c.auth(ctx), &streamv1.ListActiveRequest{})
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(response.Sessions))
	for _, session := range response.Sessions {
		ids = append(ids, session.SessionId)
	}
	return ids, nil
}

// Body decodes an event's JSON body as the library wrote it (the source of truth for custom events).
func Body(event *streamv1.Event) (map[string]any, error) {
	body := map[string]any{}
	if event.BodyJson == "" {
		return body, nil
	}
	return body, json.Unmarshal([]byte(event.BodyJson), &body)
}
