package io.github.pydanticaistream.examples;

import io.github.pydanticaistream.client.StreamClient;
import io.github.pydanticaistream.v1.EventType;
import io.github.pydanticaistream.v1.PartKind;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import java.io.PrintStream;

public final class Quickstart {
  /** Runs a prompt on a hosted agent and prints the answer as it streams. */
  public static void run(String target, String token, String agent, String prompt, PrintStream out) {
    ManagedChannel channel = ManagedChannelBuilder.forTarget(target).usePlaintext().build();
    try {
      StreamClient client = new StreamClient(channel, token);
      String sessionId = "java-" + System.nanoTime();
      client.run(agent, sessionId, prompt);
      client.listen(
          sessionId,
          event -> {
            if (event.getPartKind() == PartKind.PART_KIND_TEXT) {
              out.print(event.getContent() + event.getContentDelta());
            } else if (event.getPartKind() == PartKind.PART_KIND_TOOL_CALL) {
              out.println("[tool] " + event.getToolName() + event.getArgs().getFieldsMap().keySet());
            } else if (event.getType() == EventType.EVENT_TYPE_ERROR) {
              throw new IllegalStateException("run failed: " + event.getBodyJson());
            }
          });
    } finally {
      channel.shutdownNow();
    }
  }
}
