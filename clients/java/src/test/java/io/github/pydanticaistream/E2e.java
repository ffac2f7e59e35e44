package io.github.pydanticaistream;

import io.github.pydanticaistream.client.StreamClient;
import io.github.pydanticaistream.examples.Quickstart;
import io.github.pydanticaistream.v1.Event;
import io.github.pydanticaistream.v1.EventKind;
import io.github.pydanticaistream.v1.EventType;
import io.github.pydanticaistream.v1.PartKind;
import io.github.pydanticaistream.v1.RunResponse;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

/**
 * Checks the Java client end to end against a running server: {@code python clients/with_server.py
 * java -cp ... io.github.pydanticaistream.E2e}. Reads PAIS_ADDRESS, PAIS_TOKEN (user 1:1) and
 * PAIS_OTHER_TOKEN (user 1:2); the server hosts {@code weather}, {@code stalling} and {@code demo}
 * (tests/e2e/grpc_agents.py). Exits 1 if a check fails.
 */
public final class E2e {
  private static final String ADDRESS = System.getenv("PAIS_ADDRESS");
  private static final String PREFIX = "java-e2e-" + System.nanoTime() + "-";
  private static StreamClient alice;
  private static StreamClient bob;

  private static void check(boolean ok, String what) {
    if (!ok) {
      throw new AssertionError(what);
    }
  }

  private static List<Event> collect(StreamClient client, String session, StreamClient.ListenOptions options) {
    List<Event> events = new ArrayList<>();
    client.listen(session, options, events::add);
    return events;
  }

  private static List<String> ids(List<Event> events) {
    return events.stream().map(Event::getId).collect(Collectors.toList());
  }

  static void runThenListen() {
    RunResponse started = alice.run("weather", PREFIX + "1", "weather in Paris?");
    List<Event> events = collect(alice, PREFIX + "1", new StreamClient.ListenOptions());
    check(events.get(0).getType() == EventType.EVENT_TYPE_BEGIN, "begins with begin");
    check(events.get(0).getId().equals(started.getBeginEventId()), "Run says where the stream begins");
    check(events.get(events.size() - 1).getType() == EventType.EVENT_TYPE_END, "ends with end");
    StringBuilder text = new StringBuilder();
    Event call = null;
    Event ret = null;
    boolean answer = false;
    for (Event event : events) {
      if (event.getPartKind() == PartKind.PART_KIND_TEXT) {
        text.append(event.getContent()).append(event.getContentDelta());
      } else if (event.getPartKind() == PartKind.PART_KIND_TOOL_CALL) {
        call = event;
      } else if (event.getPartKind() == PartKind.PART_KIND_TOOL_RETURN) {
        ret = event;
      }
      answer |= event.getKind() == EventKind.EVENT_KIND_ANSWER;
    }
    check(call != null && call.getToolName().equals("get_weather"), "a tool call: " + call);
    check(call.getToolCallId().equals("call-1"), "its id");
    check(
        call.getArgs().getFieldsMap().get("city").getStringValue().equals("Paris")
            && call.getArgs().getFieldsCount() == 1,
        "its args: " + call.getArgs());
    check(ret != null && ret.getContent().equals("sunny in Paris"), "the tool return: " + ret);
    check(text.toString().equals("It is sunny."), "the text: " + text);
    check(answer, "an answer event");

    List<Event> resumed =
        collect(alice, PREFIX + "1", new StreamClient.ListenOptions().after(events.get(3).getId()));
    check(ids(resumed).equals(ids(events.subList(4, events.size()))), "resume: nothing lost or repeated");
  }

  static void cancelMidStream() throws Exception {
    String session = PREFIX + "2";
    alice.run("stalling", session, "go");
    List<Event> events = new ArrayList<>();
    CountDownLatch streaming = new CountDownLatch(1);
    CompletableFuture<Void> listening =
        CompletableFuture.runAsync(
            () ->
                alice.listen(
                    session,
                    event -> {
                      events.add(event);
                      if (event.getContentDelta().equals("hard ")) {
                        streaming.countDown();
                      }
                    }));
    check(streaming.await(10, TimeUnit.SECONDS), "the run streams");
    check(alice.listActive().equals(List.of(session)), "ListActive shows the live run");
    check(!bob.cancel(session), "another user cannot cancel it");
    check(bob.listActive().isEmpty(), "nor list it");
    long cancelled = System.nanoTime();
    check(alice.cancel(session), "Cancel says a live run was cancelled");
    listening.get(10, TimeUnit.SECONDS);
    long elapsedMillis = (System.nanoTime() - cancelled) / 1_000_000;
    check(elapsedMillis < 500, "the run ended promptly: " + elapsedMillis + " ms");
    Event error = events.get(events.size() - 2);
    check(error.getType() == EventType.EVENT_TYPE_ERROR, "an error event");
    check(error.getBodyJson().matches("\\{\"msg\": ?\"canceled\"\\}"), "canceled: " + error.getBodyJson());
    check(events.get(events.size() - 1).getType() == EventType.EVENT_TYPE_END, "then end");
    check(!alice.cancel(session), "nothing left to cancel");
    check(alice.listActive().isEmpty(), "ListActive is empty after");
  }

  static void wrongToken(ManagedChannel channel) {
    try {
      new StreamClient(channel, "wrong").listActive();
      check(false, "a wrong token is refused");
    } catch (StatusRuntimeException e) {
      check(e.getStatus().getCode() == Status.Code.UNAUTHENTICATED, "UNAUTHENTICATED: " + e.getStatus());
    }
  }

  static void quickstart() {
    ByteArrayOutputStream buffer = new ByteArrayOutputStream();
    PrintStream out = new PrintStream(buffer, true, StandardCharsets.UTF_8);
    Quickstart.run(ADDRESS, System.getenv("PAIS_TOKEN"), "demo", "count these four words", out);
    String printed = buffer.toString(StandardCharsets.UTF_8);
    check(printed.contains("[tool] count_words[text]") && printed.contains("You said 4 words"), "printed: " + printed);
    System.out.println(printed);
  }

  interface Check {
    void run() throws Exception;
  }

  public static void main(String[] args) {
    ManagedChannel channel = ManagedChannelBuilder.forTarget(ADDRESS).usePlaintext().build();
    alice = new StreamClient(channel, System.getenv("PAIS_TOKEN"));
    bob = new StreamClient(channel, System.getenv("PAIS_OTHER_TOKEN"));
    Map<String, Check> checks = new LinkedHashMap<>();
    checks.put("run then listen: begin ... end with typed fields; resume after an id", E2e::runThenListen);
    checks.put("cancel mid-stream: error then end; another user cannot see or cancel", E2e::cancelMidStream);
    checks.put("a wrong bearer token is UNAUTHENTICATED", () -> wrongToken(channel));
    checks.put("the quickstart example streams the demo agent's answer", E2e::quickstart);
    int failed = 0;
    for (Map.Entry<String, Check> entry : checks.entrySet()) {
      long start = System.nanoTime();
      try {
        entry.getValue().run();
        System.out.printf("ok   %s (%d ms)%n", entry.getKey(), (System.nanoTime() - start) / 1_000_000);
      } catch (Throwable e) {
        failed += 1;
        System.out.printf("FAIL %s: %s%n", entry.getKey(), e);
      }
    }
    channel.shutdownNow();
    System.exit(failed == 0 ? 0 : 1);
  }
}
