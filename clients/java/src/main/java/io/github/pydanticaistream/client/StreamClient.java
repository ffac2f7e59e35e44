package io.github.pydanticaistream.client;

import io.github.pydanticaistream.v1.ActiveSession;
import io.github.pydanticaistream.v1.AgentStreamServiceGrpc;
import io.github.pydanticaistream.v1.BusyPolicy;
import io.github.pydanticaistream.v1.CancelRequest;
import io.github.pydanticaistream.v1.Event;
import io.github.pydanticaistream.v1.EventType;
import io.github.pydanticaistream.v1.ListActiveRequest;
import io.github.pydanticaistream.v1.ListenRequest;
import io.github.pydanticaistream.v1.ListenResponse;
import io.github.pydanticaistream.v1.RespondRequest;
import io.github.pydanticaistream.v1.RespondResponse;
import io.github.pydanticaistream.v1.RunRequest;
import io.github.pydanticaistream.v1.RunResponse;
import io.github.pydanticaistream.v1.ToolAnswer;
import io.grpc.Channel;
import io.grpc.Context;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.MetadataUtils;
import java.util.Iterator;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.stream.Collectors;

/**
 * A client for the pydantic-ai-stream gRPC service: start agent runs, stream their events
 * (resuming after the last event id when the connection drops), cancel runs, list live sessions,
 * answer runs that wait for input ({@link #respond} with {@link ToolAnswers}).
 * It calls the service as the user its bearer token identifies.
 */
public final class StreamClient {
  /** Status codes after which {@link #listen} reconnects and resumes instead of failing. */
  private static final Set<Status.Code> RETRYABLE =
      Set.of(Status.Code.UNAVAILABLE, Status.Code.INTERNAL, Status.Code.UNKNOWN);

  private static final long UNARY_DEADLINE_SECONDS = 30;

  /**
   * Most events {@link #listen} asks the server to send in one response when it is behind ({@code
   * onEvent} still gets them one by one).
   */
  public static final int MAX_BATCH_EVENTS = 256;

  private final AgentStreamServiceGrpc.AgentStreamServiceBlockingStub stub;

  /** The server refused {@code max_batch_events} (it is older): Listen without it. */
  private volatile boolean unbatched;

  /** A client over {@code channel}; {@code token} is sent as a bearer token (null sends none). */
  public StreamClient(Channel channel, String token) {
    AgentStreamServiceGrpc.AgentStreamServiceBlockingStub stub =
        AgentStreamServiceGrpc.newBlockingStub(channel);
    if (token != null) {
      Metadata headers = new Metadata();
      headers.put(
          Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + token);
      stub = stub.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(headers));
    }
    this.stub = stub;
  }

  /** The generated stub, for calls the wrapper does not cover. */
  public AgentStreamServiceGrpc.AgentStreamServiceBlockingStub stub() {
    return stub;
  }

  /** Starts a run of a hosted agent; returns once the run's {@code begin} is in the stream. */
  public RunResponse run(String agent, String sessionId, String prompt) {
    return run(agent, sessionId, prompt, new RunOptions());
  }

  /** Options for {@link #run}; the defaults generate a run id and reject a busy session. */
  public static final class RunOptions {
    String runId = "";
    BusyPolicy ifBusy = BusyPolicy.BUSY_POLICY_REJECT;

    /** Your own run id: a retry with it returns the same run, under every policy. */
    public RunOptions runId(String runId) {
      this.runId = runId;
      return this;
    }

    /** What to do if the session has a queued or live run (default: ALREADY_EXISTS). */
    public RunOptions ifBusy(BusyPolicy policy) {
      this.ifBusy = policy;
      return this;
    }
  }

  /**
   * Starts a run of a hosted agent; returns once the run's {@code begin} is in the stream, or, with
   * {@code ifBusy(BUSY_POLICY_ENQUEUE)} on a busy session, once it waits behind the session's run
   * ({@code getWaiting()} true, {@code getBeginEventId()} empty).
   */
  public RunResponse run(String agent, String sessionId, String prompt, RunOptions options) {
    return stub.withDeadlineAfter(UNARY_DEADLINE_SECONDS, TimeUnit.SECONDS)
        .run(
            RunRequest.newBuilder()
                .setAgent(agent)
                .setSessionId(sessionId)
                .setPrompt(prompt)
                .setRunId(options.runId)
                .setIfBusy(options.ifBusy)
                .build());
  }

  /** Options for {@link #listen}; the defaults listen from the current run's {@code begin}. */
  public static final class ListenOptions {
    String after = "";
    int waitSeconds;
    int timeoutSeconds;
    int retries = 5;
    long backoffMillis = 200;

    /** Resume strictly after this event id. */
    public ListenOptions after(String eventId) {
      this.after = eventId;
      return this;
    }

    /** Seconds to wait for the session's stream to appear, then NOT_FOUND (0: the server's, 3). */
    public ListenOptions waitSeconds(int seconds) {
      this.waitSeconds = seconds;
      return this;
    }

    /** Seconds of silence after which listen throws DEADLINE_EXCEEDED (0, default: no limit). */
    public ListenOptions timeoutSeconds(int seconds) {
      this.timeoutSeconds = seconds;
      return this;
    }

    /** Reconnects in a row before giving up (default 5), {@code millis} apart, doubling. */
    public ListenOptions retries(int retries, long backoffMillis) {
      this.retries = retries;
      this.backoffMillis = backoffMillis;
      return this;
    }
  }

  /** {@link #listen(String, ListenOptions, Consumer)} with the default options. */
  public void listen(String sessionId, Consumer<Event> onEvent) {
    listen(sessionId, new ListenOptions(), onEvent);
  }

  /**
   * Calls {@code onEvent} with each event of the session, up to and including {@code end}. A
   * dropped stream is resumed after the last event seen, so each event arrives once. It returns
   * only after {@code end}, or at once when {@code after} is {@code end}'s id; what {@code onEvent}
   * throws stops it as is. Events that are ready together come in one response (up to {@link
   * #MAX_BATCH_EVENTS}); a server that does not batch is asked without it.
   *
   * @throws StatusRuntimeException when a limit ends the Listen early: DEADLINE_EXCEEDED after
   *     {@code timeoutSeconds} of silence, NOT_FOUND if no stream appears within {@code
   *     waitSeconds}, OUT_OF_RANGE for a trimmed cursor; or what the server or the connection
   *     failed with once the retries are spent
   */
  public void listen(String sessionId, ListenOptions options, Consumer<Event> onEvent) {
    String after = options.after;
    boolean delivered = false;
    int attempt = 0;
    for (; ; ) {
      StatusRuntimeException failure;
      Context.CancellableContext call = Context.current().withCancellation();
      ListenRequest request =
          ListenRequest.newBuilder()
              .setSessionId(sessionId)
              .setAfterEventId(after)
              .setWaitSeconds(options.waitSeconds)
              .setTimeoutSeconds(options.timeoutSeconds)
              .setMaxBatchEvents(unbatched ? 0 : MAX_BATCH_EVENTS)
              .build();
      try {
        Iterator<ListenResponse> responses = call.call(() -> stub.listen(request));
        for (List<Event> events = next(responses); events != null; events = next(responses)) {
          attempt = 0;
          for (Event event : events) {
            if (call.isCancelled()) {
              break; // the caller's context was cancelled mid-batch: the call's error comes next
            }
            after = event.getId(); // the last event onEvent got, however far into a batch
            delivered = true;
            onEvent.accept(event);
            if (event.getType() == EventType.EVENT_TYPE_END) {
              return;
            }
          }
        }
        if (!after.isEmpty() && !delivered) {
          return; // resumed after `end`: the server closes such a Listen at once
        }
        // Closed OK before `end` (an older server's timeout, a proxy): not the run's end: resume.
        failure =
            Status.UNAVAILABLE
                .withDescription("Listen closed before `end` (last event: " + after + ")")
                .asRuntimeException();
      } catch (CallFailed e) {
        if (request.getMaxBatchEvents() > 0 && refusesBatches(e.status)) {
          unbatched = true; // a server older than `max_batch_events`: ask it again without
          continue;
        }
        failure = e.status;
      } catch (RuntimeException e) {
        throw e;
      } catch (Exception e) {
        throw new RuntimeException(e);
      } finally {
        call.cancel(null); // ends the call (and its server-side reads) however this returns
      }
      if (!RETRYABLE.contains(failure.getStatus().getCode()) || attempt >= options.retries) {
        throw failure;
      }
      sleep(options.backoffMillis << attempt); // reconnect back-off
      attempt += 1;
    }
  }

  /** A Listen call's own failure, kept apart from what {@code onEvent} throws. */
  private static final class CallFailed extends RuntimeException {
    final StatusRuntimeException status;

    CallFailed(StatusRuntimeException status) {
      super(status);
      this.status = status;
    }
  }

  /** A server that does not know {@code ListenRequest.max_batch_events} refuses it. */
  private static boolean refusesBatches(StatusRuntimeException e) {
    Status status = e.getStatus();
    return status.getCode() == Status.Code.INVALID_ARGUMENT
        && String.valueOf(status.getDescription()).contains("fields this server does not know");
  }

  /**
   * The call's next events: one, or several that were ready together (a batch); heartbeats
   * skipped; null once it closed OK.
   */
  private static List<Event> next(Iterator<ListenResponse> responses) {
    try {
      while (responses.hasNext()) {
        ListenResponse response = responses.next();
        if (response.hasEvent()) {
          return List.of(response.getEvent());
        }
        if (response.hasEvents()) {
          return response.getEvents().getEventsList();
        }
      }
      return null;
    } catch (StatusRuntimeException e) {
      throw new CallFailed(e);
    }
  }

  /** Stops the session's live run, wherever it runs; true if there was one. */
  public boolean cancel(String sessionId) {
    return stub.withDeadlineAfter(UNARY_DEADLINE_SECONDS, TimeUnit.SECONDS)
        .cancel(CancelRequest.newBuilder().setSessionId(sessionId).build())
        .getCancelled();
  }

  /**
   * Answers the deferred tool calls the session's run {@code runId} waits on ({@link
   * ToolAnswers#approve}, {@link ToolAnswers#deny}, {@link ToolAnswers#externalResult}, {@link
   * ToolAnswers#retry}). Once every call has an answer the run goes on ({@code getContinued()}),
   * else {@code getPendingCallIdsList()} says which still need one. Safe to retry: a retry answers
   * as the first call did.
   */
  public RespondResponse respond(String sessionId, String runId, List<ToolAnswer> answers) {
    return stub.withDeadlineAfter(UNARY_DEADLINE_SECONDS, TimeUnit.SECONDS)
        .respond(
            RespondRequest.newBuilder()
                .setSessionId(sessionId)
                .setRunId(runId)
                .addAllAnswers(answers)
                .build());
  }

  /** Session ids of the caller's live runs. */
  public List<String> listActive() {
    return stub.withDeadlineAfter(UNARY_DEADLINE_SECONDS, TimeUnit.SECONDS)
        .listActive(ListActiveRequest.getDefaultInstance())
        .getSessionsList()
        .stream()
        .map(ActiveSession::getSessionId)
        .collect(Collectors.toList());
  }

  private static void sleep(long millis) {
    try {
      Thread.sleep(millis);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw Status.CANCELLED.withDescription("interrupted").withCause(e).asRuntimeException();
    }
  }
}
