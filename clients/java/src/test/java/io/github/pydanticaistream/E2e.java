package io.github.pydanticaistream;

import io.github.pydanticaistream.client.StreamClient;
import io.github.pydanticaistream.client.ToolAnswers;
import io.github.pydanticaistream.client.Transcript;
import io.github.pydanticaistream.examples.Quickstart;
import io.github.pydanticaistream.v1.AgentStreamServiceGrpc;
import io.github.pydanticaistream.v1.ActiveSession;
import io.github.pydanticaistream.v1.BusyPolicy;
import io.github.pydanticaistream.v1.DeferredCallKind;
import io.github.pydanticaistream.v1.Event;
import io.github.pydanticaistream.v1.EventBatch;
import io.github.pydanticaistream.v1.EventKind;
import io.github.pydanticaistream.v1.EventType;
import io.github.pydanticaistream.v1.ListActiveRequest;
import io.github.pydanticaistream.v1.ListenRequest;
import io.github.pydanticaistream.v1.ListenResponse;
import io.github.pydanticaistream.v1.PartKind;
import io.github.pydanticaistream.v1.RespondResponse;
import io.github.pydanticaistream.v1.RunResponse;
import io.github.pydanticaistream.v1.RunState;
import io.github.pydanticaistream.v1.ToolAnswer;
import io.github.pydanticaistream.v1.ToolOutcome;
import io.grpc.Context;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyServerBuilder;
import io.grpc.stub.StreamObserver;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.IntStream;

/**
 * Checks the Java client end to end against a running server: {@code python clients/with_server.py
 * java -cp ... io.github.pydanticaistream.E2e}. Reads PAIS_ADDRESS, PAIS_TOKEN (user 1:1) and
 * PAIS_OTHER_TOKEN (user 1:2); the server hosts {@code weather}, {@code stalling}, {@code echo}, {@code ops}
 * and {@code demo} (tests/e2e/grpc_agents.py). Exits 1 if a check fails.
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

  private static Status.Code codeOf(Runnable call) {
    try {
      call.run();
    } catch (StatusRuntimeException e) {
      return e.getStatus().getCode();
    }
    throw new AssertionError("no status error");
  }

  static void silenceLimit() {
    String session = PREFIX + "3";
    alice.run("stalling", session, "go");
    List<Event> events = new ArrayList<>();
    long started = System.nanoTime();
    try {
      alice.listen(session, new StreamClient.ListenOptions().timeoutSeconds(1), events::add);
      check(false, "a silence limit throws");
    } catch (StatusRuntimeException e) {
      check(e.getStatus().getCode() == Status.Code.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED: " + e.getStatus());
      check(e.getStatus().getDescription().contains("resume after"), "says where to resume: " + e.getStatus());
    }
    check(System.nanoTime() - started < TimeUnit.SECONDS.toNanos(5), "not retried");
    String text = events.stream().map(e -> e.getContent() + e.getContentDelta()).collect(Collectors.joining());
    check(text.equals("thinking hard "), "the events so far first: " + text);
    check(alice.listActive().equals(List.of(session)), "the run itself goes on");
    check(alice.cancel(session), "then it is cancelled");
  }

  static void resumeAfterEnd() {
    String session = PREFIX + "4";
    alice.run("weather", session, "hi");
    List<Event> events = collect(alice, session, new StreamClient.ListenOptions());
    long started = System.nanoTime();
    String end = events.get(events.size() - 1).getId();
    List<Event> resumed = collect(alice, session, new StreamClient.ListenOptions().after(end).waitSeconds(3));
    check(resumed.isEmpty(), "nothing: " + resumed);
    check(System.nanoTime() - started < TimeUnit.MILLISECONDS.toNanos(500), "at once");
  }

  static void callbackErrorStops() {
    String session = PREFIX + "5";
    alice.run("weather", session, "hi");
    AtomicInteger calls = new AtomicInteger();
    StatusRuntimeException mine = Status.UNAVAILABLE.withDescription("mine").asRuntimeException();
    try {
      alice.listen(
          session,
          event -> {
            if (calls.incrementAndGet() == 2) {
              throw mine;
            }
          });
      check(false, "what onEvent throws stops the listen");
    } catch (StatusRuntimeException e) {
      check(e == mine && calls.get() == 2, "thrown as is, not retried: " + e + " after " + calls + " events");
    }
  }

  /**
   * A gRPC server in front of the real one whose Listen closes OK after {@code eventsPerCall}
   * events, {@code end} or not, as an older server's timeout or a proxy may (a batch is cut short
   * to what is left); with {@code refusesBatches}, it refuses {@code max_batch_events} as a server
   * older than that field does.
   */
  static final class Front extends AgentStreamServiceGrpc.AgentStreamServiceImplBase {
    volatile int eventsPerCall;
    final boolean refusesBatches;
    final AtomicInteger calls = new AtomicInteger();
    /** Responses with an {@code events} payload (a batch) forwarded so far. */
    final AtomicInteger batches = new AtomicInteger();
    /** Each Listen call's {@code max_batch_events}, in order. */
    final List<Integer> asked = Collections.synchronizedList(new ArrayList<>());

    Front(int eventsPerCall, boolean refusesBatches) {
      this.eventsPerCall = eventsPerCall;
      this.refusesBatches = refusesBatches;
    }

    @Override
    public void listen(ListenRequest request, StreamObserver<ListenResponse> out) {
      calls.incrementAndGet();
      asked.add(request.getMaxBatchEvents());
      if (refusesBatches && request.getMaxBatchEvents() > 0) {
        out.onError(
            Status.INVALID_ARGUMENT
                .withDescription("request has fields this server does not know")
                .asRuntimeException());
        return;
      }
      Context.CancellableContext upstream = Context.current().withCancellation();
      try {
        Iterator<ListenResponse> responses = upstream.call(() -> alice.stub().listen(request));
        for (int sent = 0; sent < eventsPerCall && responses.hasNext(); ) {
          ListenResponse response = responses.next();
          if (response.hasEvents()) {
            List<Event> events = response.getEvents().getEventsList();
            events = events.subList(0, Math.min(events.size(), eventsPerCall - sent));
            response = ListenResponse.newBuilder().setEvents(EventBatch.newBuilder().addAllEvents(events)).build();
            sent += events.size();
            batches.incrementAndGet();
          } else if (response.hasEvent()) {
            sent += 1;
          }
          out.onNext(response);
        }
        out.onCompleted();
      } catch (StatusRuntimeException e) {
        out.onError(e);
      } catch (Exception e) {
        out.onError(Status.INTERNAL.withCause(e).asRuntimeException());
      } finally {
        upstream.cancel(null); // ends the upstream call
      }
    }
  }

  interface Through {
    void run(StreamClient client) throws Exception;
  }

  /** Runs {@code check} with a client that calls {@code front}, served on a free loopback port. */
  static void throughFront(Front front, Through check) throws Exception {
    Server server =
        NettyServerBuilder.forAddress(new InetSocketAddress(InetAddress.getLoopbackAddress(), 0))
            .addService(front)
            .build()
            .start();
    ManagedChannel channel =
        ManagedChannelBuilder.forAddress("127.0.0.1", server.getPort()).usePlaintext().build();
    try {
      check.run(new StreamClient(channel, null));
    } finally {
      channel.shutdownNow();
      server.shutdownNow();
    }
  }

  static void closedBeforeEnd() throws Exception {
    String session = PREFIX + "6";
    alice.run("weather", session, "hi");
    List<Event> full = collect(alice, session, new StreamClient.ListenOptions());
    Front front = new Front(3, false);
    throughFront(front, client -> {
      List<Event> events = collect(client, session, new StreamClient.ListenOptions().retries(5, 10));
      check(ids(events).equals(ids(full)), "every event once: " + ids(events));
      check(front.calls.get() == (full.size() + 2) / 3, "one call per 3 events: " + front.calls);

      front.eventsPerCall = 0;
      front.calls.set(0);
      Status.Code code = codeOf(() -> collect(client, session, new StreamClient.ListenOptions().retries(2, 10)));
      check(code == Status.Code.UNAVAILABLE, "from the start, closing OK with nothing: UNAVAILABLE, got " + code);
      check(front.calls.get() == 3, "after 2 retries: " + front.calls);
    });
  }

  /** What the {@code echo} agent's long runs stream back, a word a token: a late listener is far behind. */
  private static final String LONG_PROMPT =
      IntStream.range(0, 600).mapToObj(i -> "w" + i).collect(Collectors.joining(" "));

  /** Starts a long run on {@code session}; its events once it ended, listened to one a response. */
  private static List<Event> longRun(String session) {
    alice.run("echo", session, LONG_PROMPT);
    List<Event> events = new ArrayList<>();
    Iterator<ListenResponse> responses = alice.stub().listen(ListenRequest.newBuilder().setSessionId(session).build());
    while (responses.hasNext()) {
      ListenResponse response = responses.next();
      check(!response.hasEvents(), "a Listen without max_batch_events never gets a batch");
      if (response.hasEvent()) {
        events.add(response.getEvent());
      }
    }
    check(events.get(events.size() - 1).getType() == EventType.EVENT_TYPE_END, "the run ended");
    return events;
  }

  /** Whether stream entry ids ("ms-seq") strictly increase. */
  private static boolean increasing(List<String> ids) {
    long[] last = {-1, -1};
    for (String id : ids) {
      String[] parts = id.split("-", 2);
      long ms = Long.parseLong(parts[0]);
      long seq = Long.parseLong(parts[1]);
      if (ms < last[0] || (ms == last[0] && seq <= last[1])) {
        return false;
      }
      last = new long[] {ms, seq};
    }
    return true;
  }

  static void lateListenerGetsBatches() throws Exception {
    String session = PREFIX + "9";
    List<Event> single = longRun(session);
    long deltas = single.stream().filter(e -> e.getKind() == EventKind.EVENT_KIND_PART_DELTA).count();
    check(deltas >= 599, "a delta a word: " + deltas);
    Front front = new Front(Integer.MAX_VALUE, false);
    throughFront(front, client -> {
      List<Event> events = collect(client, session, new StreamClient.ListenOptions());
      check(front.asked.equals(List.of(StreamClient.MAX_BATCH_EVENTS)), "one Listen, asking for batches: " + front.asked);
      check(front.batches.get() >= 2, "the catch-up spans several batches: " + front.batches);
      check(events.equals(single), "every event once, in order, as unbatched: " + events.size() + " of " + single.size());
      check(increasing(ids(events)), "ids strictly increase");
      Transcript transcript = new Transcript();
      events.forEach(transcript::apply);
      check(transcript.ended() && transcript.text().equals(LONG_PROMPT), "its text is the prompt: " + transcript.text());

      Context.CancellableContext cancellable = Context.current().withCancellation();
      List<Event> got = new ArrayList<>();
      Status.Code code =
          codeOf(
              () ->
                  cancellable.run(
                      () ->
                          client.listen(
                              session,
                              event -> {
                                got.add(event);
                                if (got.size() == 3) {
                                  cancellable.cancel(null); // mid-batch: onEvent gets no more
                                }
                              })));
      check(code == Status.Code.CANCELLED && got.size() == 3, "cancelled after 3 events: " + code + " after " + got.size());
    });
  }

  static void batchCutShort() throws Exception {
    String session = PREFIX + "10";
    List<Event> single = longRun(session);
    Front front = new Front(100, false); // 100 events a call: batches cut short
    throughFront(front, client -> {
      List<Event> events = collect(client, session, new StreamClient.ListenOptions().retries(5, 10));
      check(events.equals(single), "every event once, in order: " + events.size() + " of " + single.size());
      int calls = front.calls.get();
      check(calls == (single.size() + 99) / 100, "each call resumed after the last event: " + calls + " calls");
      check(front.batches.get() >= calls - 1, "in batches: " + front.batches);
      check(front.asked.stream().allMatch(most -> most == StreamClient.MAX_BATCH_EVENTS), "asked: " + front.asked);
    });
  }

  static void olderServer() throws Exception {
    String session = PREFIX + "11";
    List<Event> single = longRun(session);
    Front front = new Front(Integer.MAX_VALUE, true);
    throughFront(front, client -> {
      for (int i = 0; i < 2; i++) {
        List<Event> events = collect(client, session, new StreamClient.ListenOptions());
        check(events.equals(single), "every event once, in order: " + events.size() + " of " + single.size());
      }
      check(front.asked.equals(List.of(StreamClient.MAX_BATCH_EVENTS, 0, 0)), "asked again without, remembered: " + front.asked);
      check(front.batches.get() == 0, "no batch");
    });
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

  static void demoTranscript() {
    String session = PREFIX + "7";
    alice.run("demo", session, "count these four words");
    List<Event> events = collect(alice, session, new StreamClient.ListenOptions());
    Transcript transcript = new Transcript();
    StringBuilder text = new StringBuilder();
    for (Event event : events) {
      check(!transcript.apply(event), "no resume: nothing superseded, yet " + event + " did");
      if (event.getPartKind() == PartKind.PART_KIND_TEXT) {
        text.append(event.getContent()).append(event.getContentDelta());
      }
    }
    check(transcript.text().equals(text.toString()), "transcript text: " + transcript.text() + ", events': " + text);
    check(text.toString().startsWith("You said 4 words at "), "text: " + text);
    check(transcript.ended() && transcript.attempt() == 1 && transcript.error().isEmpty(), "ended, attempt 1, no error");
    List<Transcript.Part> parts = transcript.nodes().get(0).parts();
    check(parts.size() == 3, "thinking, tool call, tool return: " + parts.size());
    check(parts.get(0).content().equals("The user said something; let me count its words first."), "thinking");
    check(
        parts.get(1).toolName().equals("count_words")
            && parts.get(1).args().getFieldsOrThrow("text").getStringValue().equals("count these four words"),
        "tool call: " + parts.get(1).args());
    check(parts.get(2).toolCallId().equals("count-1") && parts.get(2).content().equals("4"), "tool return");
  }

  /** Whether a JSON body has the string field {@code key} equal to {@code value}. */
  private static boolean hasField(String json, String key, String value) {
    return Pattern.compile("\"" + key + "\": ?\"" + Pattern.quote(value) + "\"").matcher(json).find();
  }

  /**
   * The events of the session's run {@code runId}: Listen gives the current run, so this listens
   * again until that is {@code runId}, for up to {@code seconds}.
   */
  private static List<Event> eventsOfRun(String session, String runId, int seconds) {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
    while (System.nanoTime() < deadline) {
      List<Event> events = collect(alice, session, new StreamClient.ListenOptions());
      if (hasField(events.get(0).getBodyJson(), "run_id", runId)) {
        return events;
      }
    }
    throw new AssertionError("run " + runId + " did not begin within " + seconds + " s");
  }

  static void enqueueBehindBusy() throws Exception {
    String session = PREFIX + "8";
    alice.run("stalling", session, "go");
    CompletableFuture<Void> streaming = new CompletableFuture<>();
    CompletableFuture<Void> first =
        CompletableFuture.runAsync(
            () ->
                alice.listen(
                    session,
                    event -> {
                      if (event.getContentDelta().equals("hard ")) {
                        streaming.complete(null);
                      }
                    }));
    CompletableFuture.anyOf(streaming, first).get(10, TimeUnit.SECONDS);
    check(streaming.isDone(), "the first run streams");
    String next = session + "-next";
    StreamClient.RunOptions enqueue =
        new StreamClient.RunOptions().runId(next).ifBusy(BusyPolicy.BUSY_POLICY_ENQUEUE);
    RunResponse waiting = alice.run("weather", session, "weather?", enqueue);
    check(
        waiting.getRunId().equals(next) && waiting.getBeginEventId().isEmpty() && waiting.getWaiting(),
        "waiting, no begin yet: " + waiting);
    check(alice.run("weather", session, "weather?", enqueue).equals(waiting), "a retry is the same run");
    for (StreamClient.RunOptions reject :
        List.of(new StreamClient.RunOptions(), new StreamClient.RunOptions().ifBusy(BusyPolicy.BUSY_POLICY_REJECT))) {
      Status.Code code = codeOf(() -> alice.run("weather", session, "weather?", reject));
      check(code == Status.Code.ALREADY_EXISTS, "a busy session rejects: " + code);
    }
    check(alice.cancel(session), "the first run is cancelled");
    first.get(10, TimeUnit.SECONDS);
    List<Event> events = eventsOfRun(session, next, 10);
    String begin = events.get(0).getBodyJson();
    check(
        hasField(begin, "session_id", session) && hasField(begin, "user_prompt", "weather?"),
        "its begin: " + begin);
    check(events.get(events.size() - 1).getType() == EventType.EVENT_TYPE_END, "its end");
    check(events.stream().noneMatch(e -> e.getType() == EventType.EVENT_TYPE_ERROR), "no error");
    String text =
        events.stream()
            .filter(e -> e.getPartKind() == PartKind.PART_KIND_TEXT)
            .map(e -> e.getContent() + e.getContentDelta())
            .collect(Collectors.joining());
    check(text.equals("It is sunny."), "its answer: " + text);
  }

  interface Check {
    void run() throws Exception;
  }

  /** A run of the {@code ops} agent that waits for input: its run id and its input_required event. */
  private static Map.Entry<String, Event> waitingRun(String session) throws Exception {
    String runId = alice.run("ops", session, "clean up").getRunId();
    Event[] waiting = new Event[1];
    RuntimeException stop = new RuntimeException("waits");
    try {
      alice.listen(
          session,
          event -> {
            if (event.getKind() == EventKind.EVENT_KIND_INPUT_REQUIRED) {
              waiting[0] = event;
              throw stop;
            }
          });
    } catch (RuntimeException e) {
      check(e == stop, "the run waits for input: " + e);
    }
    check(waiting[0] != null, "an input_required event");
    for (long deadline = System.nanoTime() + 20_000_000_000L; ; Thread.sleep(20)) {
      List<ActiveSession> sessions = alice.stub().listActive(ListActiveRequest.getDefaultInstance()).getSessionsList();
      if (sessions.stream()
          .anyMatch(s -> s.getSessionId().equals(session) && s.getRunId().equals(runId) && s.getState() == RunState.RUN_STATE_WAITING_FOR_INPUT)) {
        return Map.entry(runId, waiting[0]);
      }
      check(System.nanoTime() < deadline, "ListActive lists the run as waiting for input: " + sessions);
    }
  }

  private static String textOf(List<Event> events) {
    return events.stream()
        .filter(e -> e.getPartKind() == PartKind.PART_KIND_TEXT)
        .map(e -> e.getContent() + e.getContentDelta())
        .collect(Collectors.joining());
  }

  private static Map<String, Event> returnsOf(List<Event> events) {
    return events.stream()
        .filter(e -> e.getPartKind() == PartKind.PART_KIND_TOOL_RETURN)
        .collect(Collectors.toMap(Event::getToolCallId, e -> e));
  }

  static void answerWaitingRun() throws Exception {
    String session = PREFIX + "w1";
    Map.Entry<String, Event> waiting = waitingRun(session);
    String runId = waiting.getKey();
    List<ToolAnswers.InputCall> calls = ToolAnswers.inputCalls(waiting.getValue());
    check(calls.size() == 2, "two calls: " + calls);
    check(calls.get(0).toolCallId().equals("c1") && calls.get(0).toolName().equals("drop_db")
        && calls.get(0).args().equals(Map.of("name", "staging"))
        && calls.get(0).kind() == DeferredCallKind.DEFERRED_CALL_KIND_APPROVAL, "an approval: " + calls);
    check(calls.get(1).toolCallId().equals("c2") && calls.get(1).toolName().equals("page")
        && calls.get(1).args().equals(Map.of("msg", "db"))
        && calls.get(1).kind() == DeferredCallKind.DEFERRED_CALL_KIND_EXTERNAL, "an external call: " + calls);
    check(waiting.getValue().getDeadlineUnixMs() > System.currentTimeMillis(), "a deadline ahead");
    RespondResponse held = alice.respond(session, runId, List.of(ToolAnswers.approve("c1")));
    check(!held.getContinued() && held.getPendingCallIdsList().equals(List.of("c2")), "held until c2 has an answer: " + held);
    List<ToolAnswer> result = List.of(ToolAnswers.externalResult("c2", Map.of("ack", true)));
    check(alice.respond(session, runId, result).getContinued(), "the run goes on");
    List<Event> rest = collect(alice, session, new StreamClient.ListenOptions().after(waiting.getValue().getId()));
    Map<String, Event> returns = returnsOf(rest);
    check(returns.get("c1").getContent().equals("dropped staging"), "the approved tool ran: " + returns);
    check(returns.get("c2").getContent().equals("{\"ack\": true}"), "the external result: " + returns);
    check(textOf(rest).equals("done: drop_db=dropped staging; page={'ack': True}"), "the answer: " + textOf(rest));
    check(rest.get(rest.size() - 1).getType() == EventType.EVENT_TYPE_END, "then end");
    RespondResponse again = alice.respond(session, runId, result);
    check(again.getContinued() && again.getPendingCallIdsCount() == 0, "a retry answers as the first did: " + again);
  }

  static void denyWaitingRun() throws Exception {
    String session = PREFIX + "w2";
    Map.Entry<String, Event> waiting = waitingRun(session);
    String runId = waiting.getKey();
    List<ToolAnswer> approval = List.of(ToolAnswers.approve("c1"));
    check(codeOf(() -> bob.respond(session, runId, approval)) == Status.Code.NOT_FOUND, "another user's answer");
    List<ToolAnswer> wrongKind = List.of(ToolAnswers.approve("c2"));
    check(codeOf(() -> alice.respond(session, runId, wrongKind)) == Status.Code.INVALID_ARGUMENT, "c2 is external");
    List<ToolAnswer> answers = List.of(ToolAnswers.deny("c1", "not on Fridays"), ToolAnswers.retry("c2", "pager down"));
    check(alice.respond(session, runId, answers).getContinued(), "the run goes on");
    List<Event> rest = collect(alice, session, new StreamClient.ListenOptions().after(waiting.getValue().getId()));
    check(returnsOf(rest).get("c1").getOutcome() == ToolOutcome.TOOL_OUTCOME_DENIED, "c1 denied");
    check(textOf(rest).startsWith("done: drop_db=not on Fridays; page=pager down"), "the model saw both: " + textOf(rest));
  }

  public static void main(String[] args) {
    ManagedChannel channel = ManagedChannelBuilder.forTarget(ADDRESS).usePlaintext().build();
    alice = new StreamClient(channel, System.getenv("PAIS_TOKEN"));
    bob = new StreamClient(channel, System.getenv("PAIS_OTHER_TOKEN"));
    Map<String, Check> checks = new LinkedHashMap<>();
    checks.put("run then listen: begin ... end with typed fields; resume after an id", E2e::runThenListen);
    checks.put("cancel mid-stream: error then end; another user cannot see or cancel", E2e::cancelMidStream);
    checks.put("a silence limit ends the listen with DEADLINE_EXCEEDED after the events so far", E2e::silenceLimit);
    checks.put("a listen resumed after end returns at once with nothing", E2e::resumeAfterEnd);
    checks.put("what onEvent throws stops the listen as is, not retried", E2e::callbackErrorStops);
    checks.put("a listen that closes OK before end is resumed; from the start with nothing, it fails", E2e::closedBeforeEnd);
    checks.put("a wrong bearer token is UNAUTHENTICATED", () -> wrongToken(channel));
    checks.put("the quickstart example streams the demo agent's answer", E2e::quickstart);
    checks.put("a transcript of the demo agent's run holds its text, tool call and return", E2e::demoTranscript);
    checks.put("a run enqueued on a busy session waits, starts when the session's run ended, and runs", E2e::enqueueBehindBusy);
    checks.put("a late listener of a long run gets its events in batches, given once each, in order", E2e::lateListenerGetsBatches);
    checks.put("a listen closed partway through a batch resumes after the last event onEvent got", E2e::batchCutShort);
    checks.put("a server that refuses max_batch_events is asked again without it, and the client remembers", E2e::olderServer);
    checks.put("a waiting run: an approval and an external result answered with respond, the run goes on", E2e::answerWaitingRun);
    checks.put("a denial and a retry reach the model; another user's answer is NOT_FOUND", E2e::denyWaitingRun);
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
