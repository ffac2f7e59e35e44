package io.github.pydanticaistream.client;

import io.github.pydanticaistream.v1.ActiveSession;
import io.github.pydanticaistream.v1.AgentStreamServiceGrpc;
import io.github.pydanticaistream.v1.CancelRequest;
import io.github.pydanticaistream.v1.Event;
import io.github.pydanticaistream.v1.EventType;
import io.github.pydanticaistream.v1.ListActiveRequest;
import io.github.pydanticaistream.v1.ListenRequest;
import io.github.pydanticaistream.v1.ListenResponse;
import io.github.pydanticaistream.v1.RunRequest;
import io.github.pydanticaistream.v1.RunResponse;
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
 * (resuming after the last event id when the connection drops), cancel runs, list live sessions.
 * It calls the service as the user its bearer token identifies.
 */
public final class StreamClient {
  /** Status codes after which {@link #listen} reconnects and resumes instead of failing. */
  private static final Set<Status.Code> RETRYABLE =
      Set.of(Status.Code.UNAVAILABLE, Status.Code.INTERNAL, Status.Code.UNKNOWN);

  private static final long UNARY_DEADLINE_SECONDS = 30;

  private final AgentStreamServiceGrpc.AgentStreamServiceBlockingStub stub;

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
    return stub.withDeadlineAfter(UNARY_DEADLINE_SECONDS, TimeUnit.SECONDS)
        .run(
            RunRequest.newBuilder()
                .setAgent(agent)
                .setSessionId(sessionId)
                .setPrompt(prompt)
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

    /** Seconds to wait for the session's stream to appear (0: the server's default, 3). */
    public ListenOptions waitSeconds(int seconds) {
      this.waitSeconds = seconds;
      return this;
    }

    /** Seconds of silence after which the stream ends (0: the server's default, 60). */
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
   * dropped stream is resumed after the last event seen, so each event arrives once.
   *
   * @throws StatusRuntimeException NOT_FOUND if no stream appears within the wait, or what the
   *     server or the connection failed with once the retries are spent
   */
  public void listen(String sessionId, ListenOptions options, Consumer<Event> onEvent) {
    String after = options.after;
    int attempt = 0;
    for (; ; ) {
      Context.CancellableContext call = Context.current().withCancellation();
      String from = after;
      try {
        Iterator<ListenResponse> responses =
            call.call(
                () ->
                    stub.listen(
                        ListenRequest.newBuilder()
                            .setSessionId(sessionId)
                            .setAfterEventId(from)
                            .setWaitSeconds(options.waitSeconds)
                            .setTimeoutSeconds(options.timeoutSeconds)
                            .build()));
        while (responses.hasNext()) {
          ListenResponse response = responses.next();
          if (!response.hasEvent()) {
            continue; // heartbeat
          }
          Event event = response.getEvent();
          after = event.getId();
          attempt = 0;
          onEvent.accept(event);
          if (event.getType() == EventType.EVENT_TYPE_END) {
            return;
          }
        }
        return;
      } catch (StatusRuntimeException e) {
        if (!RETRYABLE.contains(e.getStatus().getCode()) || attempt >= options.retries) {
          throw e;
        }
        sleep(options.backoffMillis << attempt); // reconnect back-off
        attempt += 1;
      } catch (Exception e) {
        throw e instanceof RuntimeException ? (RuntimeException) e : new RuntimeException(e);
      } finally {
        call.cancel(null); // ends the call (and its server-side reads) however this returns
      }
    }
  }

  /** Stops the session's live run, wherever it runs; true if there was one. */
  public boolean cancel(String sessionId) {
    return stub.withDeadlineAfter(UNARY_DEADLINE_SECONDS, TimeUnit.SECONDS)
        .cancel(CancelRequest.newBuilder().setSessionId(sessionId).build())
        .getCancelled();
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
