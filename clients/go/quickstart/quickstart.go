// Package quickstart runs a prompt on a hosted agent and prints the answer as it streams.
package quickstart

import (
	"context"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"

	streamv1 "github.com/pydantic-ai-stream/pydantic-ai-stream/clients/go/pydantic_ai_stream/v1"
	"github.com/pydantic-ai-stream/pydantic-ai-stream/clients/go/streamclient"
)

func Run(ctx context.Context, address, token, agent, prompt string, out io.Writer) error {
	conn, err := grpc.Dial(address, grpc.WithInsecure()) // plaintext; use TLS credentials off loopback
	if err != nil {
		return err
	}
	defer conn.Close()
	client := streamclient.New(conn, token)
	sessionID := fmt.Sprintf("go-%d", time.Now().UnixNano())
	if _, err := client.Run(ctx, agent, sessionID, prompt); err != nil {
		return err
	}
	return client.Listen(ctx, sessionID, streamclient.ListenOptions{}, func(event *streamv1.Event) error {
		switch {
		case event.PartKind == streamv1.PartKind_PART_KIND_TEXT:
			fmt.Fprint(out, event.GetContent()+event.GetContentDelta())
		case event.PartKind == streamv1.PartKind_PART_KIND_TOOL_CALL:
			fmt.Fprintf(out, "[tool] %s(%v)\n", event.GetToolName(), event.Args.AsMap())
		case event.Type == streamv1.EventType_EVENT_TYPE_ERROR:
			return fmt.Errorf("run failed: %s", event.BodyJson)
		}
		return nil
	})
}
