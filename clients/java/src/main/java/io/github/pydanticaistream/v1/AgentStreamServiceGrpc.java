package io.github.pydanticaistream.v1;

import static io.grpc.MethodDescriptor.generateFullMethodName;

/**
 * <pre>
 * Runs pydantic-ai agents hosted by the server and streams their events.
 * Every call acts for the caller that the `authorization` metadata identifies: a run, its
 * events and its cancellation belong to the caller's (scope_id, user_id), and no call can
 * reach another user's session.
 * </pre>
 */
@javax.annotation.Generated(
    value = "by gRPC proto compiler",
    comments = "Source: pydantic_ai_stream/v1/stream.proto")
@io.grpc.stub.annotations.GrpcGenerated
public final class AgentStreamServiceGrpc {

  private AgentStreamServiceGrpc() {}

  public static final String SERVICE_NAME = "pydantic_ai_stream.v1.AgentStreamService";

  // Static method descriptors that strictly reflect the proto.
  private static volatile io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.RunRequest,
      io.github.pydanticaistream.v1.RunResponse> getRunMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Run",
      requestType = io.github.pydanticaistream.v1.RunRequest.class,
      responseType = io.github.pydanticaistream.v1.RunResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.RunRequest,
      io.github.pydanticaistream.v1.RunResponse> getRunMethod() {
    io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.RunRequest, io.github.pydanticaistream.v1.RunResponse> getRunMethod;
    if ((getRunMethod = AgentStreamServiceGrpc.getRunMethod) == null) {
      synchronized (AgentStreamServiceGrpc.class) {
        if ((getRunMethod = AgentStreamServiceGrpc.getRunMethod) == null) {
          AgentStreamServiceGrpc.getRunMethod = getRunMethod =
              io.grpc.MethodDescriptor.<io.github.pydanticaistream.v1.RunRequest, io.github.pydanticaistream.v1.RunResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Run"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  io.github.pydanticaistream.v1.RunRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  io.github.pydanticaistream.v1.RunResponse.getDefaultInstance()))
              .setSchemaDescriptor(new AgentStreamServiceMethodDescriptorSupplier("Run"))
              .build();
        }
      }
    }
    return getRunMethod;
  }

  private static volatile io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.ListenRequest,
      io.github.pydanticaistream.v1.ListenResponse> getListenMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Listen",
      requestType = io.github.pydanticaistream.v1.ListenRequest.class,
      responseType = io.github.pydanticaistream.v1.ListenResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.SERVER_STREAMING)
  public static io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.ListenRequest,
      io.github.pydanticaistream.v1.ListenResponse> getListenMethod() {
    io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.ListenRequest, io.github.pydanticaistream.v1.ListenResponse> getListenMethod;
    if ((getListenMethod = AgentStreamServiceGrpc.getListenMethod) == null) {
      synchronized (AgentStreamServiceGrpc.class) {
        if ((getListenMethod = AgentStreamServiceGrpc.getListenMethod) == null) {
          AgentStreamServiceGrpc.getListenMethod = getListenMethod =
              io.grpc.MethodDescriptor.<io.github.pydanticaistream.v1.ListenRequest, io.github.pydanticaistream.v1.ListenResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.SERVER_STREAMING)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Listen"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  io.github.pydanticaistream.v1.ListenRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  io.github.pydanticaistream.v1.ListenResponse.getDefaultInstance()))
              .setSchemaDescriptor(new AgentStreamServiceMethodDescriptorSupplier("Listen"))
              .build();
        }
      }
    }
    return getListenMethod;
  }

  private static volatile io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.CancelRequest,
      io.github.pydanticaistream.v1.CancelResponse> getCancelMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Cancel",
      requestType = io.github.pydanticaistream.v1.CancelRequest.class,
      responseType = io.github.pydanticaistream.v1.CancelResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.CancelRequest,
      io.github.pydanticaistream.v1.CancelResponse> getCancelMethod() {
    io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.CancelRequest, io.github.pydanticaistream.v1.CancelResponse> getCancelMethod;
    if ((getCancelMethod = AgentStreamServiceGrpc.getCancelMethod) == null) {
      synchronized (AgentStreamServiceGrpc.class) {
        if ((getCancelMethod = AgentStreamServiceGrpc.getCancelMethod) == null) {
          AgentStreamServiceGrpc.getCancelMethod = getCancelMethod =
              io.grpc.MethodDescriptor.<io.github.pydanticaistream.v1.CancelRequest, io.github.pydanticaistream.v1.CancelResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Cancel"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  io.github.pydanticaistream.v1.CancelRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  io.github.pydanticaistream.v1.CancelResponse.getDefaultInstance()))
              .setSchemaDescriptor(new AgentStreamServiceMethodDescriptorSupplier("Cancel"))
              .build();
        }
      }
    }
    return getCancelMethod;
  }

  private static volatile io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.ListActiveRequest,
      io.github.pydanticaistream.v1.ListActiveResponse> getListActiveMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "ListActive",
      requestType = io.github.pydanticaistream.v1.ListActiveRequest.class,
      responseType = io.github.pydanticaistream.v1.ListActiveResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.ListActiveRequest,
      io.github.pydanticaistream.v1.ListActiveResponse> getListActiveMethod() {
    io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.ListActiveRequest, io.github.pydanticaistream.v1.ListActiveResponse> getListActiveMethod;
    if ((getListActiveMethod = AgentStreamServiceGrpc.getListActiveMethod) == null) {
      synchronized (AgentStreamServiceGrpc.class) {
        if ((getListActiveMethod = AgentStreamServiceGrpc.getListActiveMethod) == null) {
          AgentStreamServiceGrpc.getListActiveMethod = getListActiveMethod =
              io.grpc.MethodDescriptor.<io.github.pydanticaistream.v1.ListActiveRequest, io.github.pydanticaistream.v1.ListActiveResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "ListActive"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  io.github.pydanticaistream.v1.ListActiveRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  io.github.pydanticaistream.v1.ListActiveResponse.getDefaultInstance()))
              .setSchemaDescriptor(new AgentStreamServiceMethodDescriptorSupplier("ListActive"))
              .build();
        }
      }
    }
    return getListActiveMethod;
  }

  private static volatile io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.RespondRequest,
      io.github.pydanticaistream.v1.RespondResponse> getRespondMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "Respond",
      requestType = io.github.pydanticaistream.v1.RespondRequest.class,
      responseType = io.github.pydanticaistream.v1.RespondResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.RespondRequest,
      io.github.pydanticaistream.v1.RespondResponse> getRespondMethod() {
    io.grpc.MethodDescriptor<io.github.pydanticaistream.v1.RespondRequest, io.github.pydanticaistream.v1.RespondResponse> getRespondMethod;
    if ((getRespondMethod = AgentStreamServiceGrpc.getRespondMethod) == null) {
      synchronized (AgentStreamServiceGrpc.class) {
        if ((getRespondMethod = AgentStreamServiceGrpc.getRespondMethod) == null) {
          AgentStreamServiceGrpc.getRespondMethod = getRespondMethod =
              io.grpc.MethodDescriptor.<io.github.pydanticaistream.v1.RespondRequest, io.github.pydanticaistream.v1.RespondResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "Respond"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  io.github.pydanticaistream.v1.RespondRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  io.github.pydanticaistream.v1.RespondResponse.getDefaultInstance()))
              .setSchemaDescriptor(new AgentStreamServiceMethodDescriptorSupplier("Respond"))
              .build();
        }
      }
    }
    return getRespondMethod;
  }

  /**
   * Creates a new async stub that supports all call types for the service
   */
  public static AgentStreamServiceStub newStub(io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<AgentStreamServiceStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<AgentStreamServiceStub>() {
        @java.lang.Override
        public AgentStreamServiceStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new AgentStreamServiceStub(channel, callOptions);
        }
      };
    return AgentStreamServiceStub.newStub(factory, channel);
  }

  /**
   * Creates a new blocking-style stub that supports unary and streaming output calls on the service
   */
  public static AgentStreamServiceBlockingStub newBlockingStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<AgentStreamServiceBlockingStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<AgentStreamServiceBlockingStub>() {
        @java.lang.Override
        public AgentStreamServiceBlockingStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new AgentStreamServiceBlockingStub(channel, callOptions);
        }
      };
    return AgentStreamServiceBlockingStub.newStub(factory, channel);
  }

  /**
   * Creates a new ListenableFuture-style stub that supports unary calls on the service
   */
  public static AgentStreamServiceFutureStub newFutureStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<AgentStreamServiceFutureStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<AgentStreamServiceFutureStub>() {
        @java.lang.Override
        public AgentStreamServiceFutureStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new AgentStreamServiceFutureStub(channel, callOptions);
        }
      };
    return AgentStreamServiceFutureStub.newStub(factory, channel);
  }

  /**
   * <pre>
   * Runs pydantic-ai agents hosted by the server and streams their events.
   * Every call acts for the caller that the `authorization` metadata identifies: a run, its
   * events and its cancellation belong to the caller's (scope_id, user_id), and no call can
   * reach another user's session.
   * </pre>
   */
  public static abstract class AgentStreamServiceImplBase implements io.grpc.BindableService {

    /**
     * <pre>
     * Accepts a run of a hosted agent on a session into the run queue and returns at once, once
     * the session is taken, its stream holds the run's `begin` event and a worker can claim it
     * (BUSY_POLICY_ENQUEUE: once it waits behind the session's run, `waiting`). Retrying with the
     * same `run_id` returns that run, also after it ended, and runs nothing again.
     * ALREADY_EXISTS if the session has a queued or live run (BUSY_POLICY_REJECT, the default);
     * RESOURCE_EXHAUSTED if the caller's scope has as many runs waiting as it may; NOT_FOUND for an
     * unknown agent; PERMISSION_DENIED for an agent the caller may not run; INVALID_ARGUMENT for bad
     * ids, an empty or too large prompt, a model setting the server does not allow, a context or
     * attachments out of bounds or that do not validate; UNAVAILABLE
     * while the server shuts down or its Redis does not answer.
     * </pre>
     */
    public void run(io.github.pydanticaistream.v1.RunRequest request,
        io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.RunResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getRunMethod(), responseObserver);
    }

    /**
     * <pre>
     * Streams a session's events: from the current run's `begin`, or strictly after
     * `after_event_id`. Lasts until the `end` event (heartbeats while the run is silent) and
     * closes with OK only after it, or at once when resumed after it. A limit that ends the
     * stream early is a status: NOT_FOUND (no stream within `wait_seconds`), DEADLINE_EXCEEDED
     * (`timeout_seconds` of silence), OUT_OF_RANGE (a cursor trimmed away or past the end).
     * </pre>
     */
    public void listen(io.github.pydanticaistream.v1.ListenRequest request,
        io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.ListenResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getListenMethod(), responseObserver);
    }

    /**
     * <pre>
     * Stops the session's run, wherever it runs: a live run is asked to stop at once, a queued one
     * is ended on the spot; either way its listeners get `error` {"msg": "canceled"}, then `end`.
     * </pre>
     */
    public void cancel(io.github.pydanticaistream.v1.CancelRequest request,
        io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.CancelResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getCancelMethod(), responseObserver);
    }

    /**
     * <pre>
     * Lists the caller's sessions that have a queued or live run.
     * </pre>
     */
    public void listActive(io.github.pydanticaistream.v1.ListActiveRequest request,
        io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.ListActiveResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getListActiveMethod(), responseObserver);
    }

    /**
     * <pre>
     * Answers the deferred tool calls a session's run waits on (see EVENT_KIND_INPUT_REQUIRED):
     * approvals and external results. Answers may come in several calls; once every call has one,
     * the run goes on, on whichever worker claims it, in the same stream. Idempotent: a retry with
     * the same answers returns what the first call did. INVALID_ARGUMENT for no answers, a call id
     * given twice, a call the run does not wait on, or an answer of the wrong kind; NOT_FOUND for a
     * run the session never had (other users' sessions are never found); FAILED_PRECONDITION for a
     * run that does not wait (any more: it runs, ended, was cancelled or its wait expired) or a call
     * that already has another answer; UNAVAILABLE while Redis does not answer (retry).
     * </pre>
     */
    public void respond(io.github.pydanticaistream.v1.RespondRequest request,
        io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.RespondResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getRespondMethod(), responseObserver);
    }

    @java.lang.Override public final io.grpc.ServerServiceDefinition bindService() {
      return io.grpc.ServerServiceDefinition.builder(getServiceDescriptor())
          .addMethod(
            getRunMethod(),
            io.grpc.stub.ServerCalls.asyncUnaryCall(
              new MethodHandlers<
                io.github.pydanticaistream.v1.RunRequest,
                io.github.pydanticaistream.v1.RunResponse>(
                  this, METHODID_RUN)))
          .addMethod(
            getListenMethod(),
            io.grpc.stub.ServerCalls.asyncServerStreamingCall(
              new MethodHandlers<
                io.github.pydanticaistream.v1.ListenRequest,
                io.github.pydanticaistream.v1.ListenResponse>(
                  this, METHODID_LISTEN)))
          .addMethod(
            getCancelMethod(),
            io.grpc.stub.ServerCalls.asyncUnaryCall(
              new MethodHandlers<
                io.github.pydanticaistream.v1.CancelRequest,
                io.github.pydanticaistream.v1.CancelResponse>(
                  this, METHODID_CANCEL)))
          .addMethod(
            getListActiveMethod(),
            io.grpc.stub.ServerCalls.asyncUnaryCall(
              new MethodHandlers<
                io.github.pydanticaistream.v1.ListActiveRequest,
                io.github.pydanticaistream.v1.ListActiveResponse>(
                  this, METHODID_LIST_ACTIVE)))
          .addMethod(
            getRespondMethod(),
            io.grpc.stub.ServerCalls.asyncUnaryCall(
              new MethodHandlers<
                io.github.pydanticaistream.v1.RespondRequest,
                io.github.pydanticaistream.v1.RespondResponse>(
                  this, METHODID_RESPOND)))
          .build();
    }
  }

  /**
   * <pre>
   * Runs pydantic-ai agents hosted by the server and streams their events.
   * Every call acts for the caller that the `authorization` metadata identifies: a run, its
   * events and its cancellation belong to the caller's (scope_id, user_id), and no call can
   * reach another user's session.
   * </pre>
   */
  public static final class AgentStreamServiceStub extends io.grpc.stub.AbstractAsyncStub<AgentStreamServiceStub> {
    private AgentStreamServiceStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected AgentStreamServiceStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new AgentStreamServiceStub(channel, callOptions);
    }

    /**
     * <pre>
     * Accepts a run of a hosted agent on a session into the run queue and returns at once, once
     * the session is taken, its stream holds the run's `begin` event and a worker can claim it
     * (BUSY_POLICY_ENQUEUE: once it waits behind the session's run, `waiting`). Retrying with the
     * same `run_id` returns that run, also after it ended, and runs nothing again.
     * ALREADY_EXISTS if the session has a queued or live run (BUSY_POLICY_REJECT, the default);
     * RESOURCE_EXHAUSTED if the caller's scope has as many runs waiting as it may; NOT_FOUND for an
     * unknown agent; PERMISSION_DENIED for an agent the caller may not run; INVALID_ARGUMENT for bad
     * ids, an empty or too large prompt, a model setting the server does not allow, a context or
     * attachments out of bounds or that do not validate; UNAVAILABLE
     * while the server shuts down or its Redis does not answer.
     * </pre>
     */
    public void run(io.github.pydanticaistream.v1.RunRequest request,
        io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.RunResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getRunMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Streams a session's events: from the current run's `begin`, or strictly after
     * `after_event_id`. Lasts until the `end` event (heartbeats while the run is silent) and
     * closes with OK only after it, or at once when resumed after it. A limit that ends the
     * stream early is a status: NOT_FOUND (no stream within `wait_seconds`), DEADLINE_EXCEEDED
     * (`timeout_seconds` of silence), OUT_OF_RANGE (a cursor trimmed away or past the end).
     * </pre>
     */
    public void listen(io.github.pydanticaistream.v1.ListenRequest request,
        io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.ListenResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncServerStreamingCall(
          getChannel().newCall(getListenMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Stops the session's run, wherever it runs: a live run is asked to stop at once, a queued one
     * is ended on the spot; either way its listeners get `error` {"msg": "canceled"}, then `end`.
     * </pre>
     */
    public void cancel(io.github.pydanticaistream.v1.CancelRequest request,
        io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.CancelResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getCancelMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Lists the caller's sessions that have a queued or live run.
     * </pre>
     */
    public void listActive(io.github.pydanticaistream.v1.ListActiveRequest request,
        io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.ListActiveResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getListActiveMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * Answers the deferred tool calls a session's run waits on (see EVENT_KIND_INPUT_REQUIRED):
     * approvals and external results. Answers may come in several calls; once every call has one,
     * the run goes on, on whichever worker claims it, in the same stream. Idempotent: a retry with
     * the same answers returns what the first call did. INVALID_ARGUMENT for no answers, a call id
     * given twice, a call the run does not wait on, or an answer of the wrong kind; NOT_FOUND for a
     * run the session never had (other users' sessions are never found); FAILED_PRECONDITION for a
     * run that does not wait (any more: it runs, ended, was cancelled or its wait expired) or a call
     * that already has another answer; UNAVAILABLE while Redis does not answer (retry).
     * </pre>
     */
    public void respond(io.github.pydanticaistream.v1.RespondRequest request,
        io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.RespondResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getRespondMethod(), getCallOptions()), request, responseObserver);
    }
  }

  /**
   * <pre>
   * Runs pydantic-ai agents hosted by the server and streams their events.
   * Every call acts for the caller that the `authorization` metadata identifies: a run, its
   * events and its cancellation belong to the caller's (scope_id, user_id), and no call can
   * reach another user's session.
   * </pre>
   */
  public static final class AgentStreamServiceBlockingStub extends io.grpc.stub.AbstractBlockingStub<AgentStreamServiceBlockingStub> {
    private AgentStreamServiceBlockingStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected AgentStreamServiceBlockingStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new AgentStreamServiceBlockingStub(channel, callOptions);
    }

    /**
     * <pre>
     * Accepts a run of a hosted agent on a session into the run queue and returns at once, once
     * the session is taken, its stream holds the run's `begin` event and a worker can claim it
     * (BUSY_POLICY_ENQUEUE: once it waits behind the session's run, `waiting`). Retrying with the
     * same `run_id` returns that run, also after it ended, and runs nothing again.
     * ALREADY_EXISTS if the session has a queued or live run (BUSY_POLICY_REJECT, the default);
     * RESOURCE_EXHAUSTED if the caller's scope has as many runs waiting as it may; NOT_FOUND for an
     * unknown agent; PERMISSION_DENIED for an agent the caller may not run; INVALID_ARGUMENT for bad
     * ids, an empty or too large prompt, a model setting the server does not allow, a context or
     * attachments out of bounds or that do not validate; UNAVAILABLE
     * while the server shuts down or its Redis does not answer.
     * </pre>
     */
    public io.github.pydanticaistream.v1.RunResponse run(io.github.pydanticaistream.v1.RunRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getRunMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Streams a session's events: from the current run's `begin`, or strictly after
     * `after_event_id`. Lasts until the `end` event (heartbeats while the run is silent) and
     * closes with OK only after it, or at once when resumed after it. A limit that ends the
     * stream early is a status: NOT_FOUND (no stream within `wait_seconds`), DEADLINE_EXCEEDED
     * (`timeout_seconds` of silence), OUT_OF_RANGE (a cursor trimmed away or past the end).
     * </pre>
     */
    public java.util.Iterator<io.github.pydanticaistream.v1.ListenResponse> listen(
        io.github.pydanticaistream.v1.ListenRequest request) {
      return io.grpc.stub.ClientCalls.blockingServerStreamingCall(
          getChannel(), getListenMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Stops the session's run, wherever it runs: a live run is asked to stop at once, a queued one
     * is ended on the spot; either way its listeners get `error` {"msg": "canceled"}, then `end`.
     * </pre>
     */
    public io.github.pydanticaistream.v1.CancelResponse cancel(io.github.pydanticaistream.v1.CancelRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getCancelMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Lists the caller's sessions that have a queued or live run.
     * </pre>
     */
    public io.github.pydanticaistream.v1.ListActiveResponse listActive(io.github.pydanticaistream.v1.ListActiveRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getListActiveMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * Answers the deferred tool calls a session's run waits on (see EVENT_KIND_INPUT_REQUIRED):
     * approvals and external results. Answers may come in several calls; once every call has one,
     * the run goes on, on whichever worker claims it, in the same stream. Idempotent: a retry with
     * the same answers returns what the first call did. INVALID_ARGUMENT for no answers, a call id
     * given twice, a call the run does not wait on, or an answer of the wrong kind; NOT_FOUND for a
     * run the session never had (other users' sessions are never found); FAILED_PRECONDITION for a
     * run that does not wait (any more: it runs, ended, was cancelled or its wait expired) or a call
     * that already has another answer; UNAVAILABLE while Redis does not answer (retry).
     * </pre>
     */
    public io.github.pydanticaistream.v1.RespondResponse respond(io.github.pydanticaistream.v1.RespondRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getRespondMethod(), getCallOptions(), request);
    }
  }

  /**
   * <pre>
   * Runs pydantic-ai agents hosted by the server and streams their events.
   * Every call acts for the caller that the `authorization` metadata identifies: a run, its
   * events and its cancellation belong to the caller's (scope_id, user_id), and no call can
   * reach another user's session.
   * </pre>
   */
  public static final class AgentStreamServiceFutureStub extends io.grpc.stub.AbstractFutureStub<AgentStreamServiceFutureStub> {
    private AgentStreamServiceFutureStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected AgentStreamServiceFutureStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new AgentStreamServiceFutureStub(channel, callOptions);
    }

    /**
     * <pre>
     * Accepts a run of a hosted agent on a session into the run queue and returns at once, once
     * the session is taken, its stream holds the run's `begin` event and a worker can claim it
     * (BUSY_POLICY_ENQUEUE: once it waits behind the session's run, `waiting`). Retrying with the
     * same `run_id` returns that run, also after it ended, and runs nothing again.
     * ALREADY_EXISTS if the session has a queued or live run (BUSY_POLICY_REJECT, the default);
     * RESOURCE_EXHAUSTED if the caller's scope has as many runs waiting as it may; NOT_FOUND for an
     * unknown agent; PERMISSION_DENIED for an agent the caller may not run; INVALID_ARGUMENT for bad
     * ids, an empty or too large prompt, a model setting the server does not allow, a context or
     * attachments out of bounds or that do not validate; UNAVAILABLE
     * while the server shuts down or its Redis does not answer.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<io.github.pydanticaistream.v1.RunResponse> run(
        io.github.pydanticaistream.v1.RunRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getRunMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * Stops the session's run, wherever it runs: a live run is asked to stop at once, a queued one
     * is ended on the spot; either way its listeners get `error` {"msg": "canceled"}, then `end`.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<io.github.pydanticaistream.v1.CancelResponse> cancel(
        io.github.pydanticaistream.v1.CancelRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getCancelMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * Lists the caller's sessions that have a queued or live run.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<io.github.pydanticaistream.v1.ListActiveResponse> listActive(
        io.github.pydanticaistream.v1.ListActiveRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getListActiveMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * Answers the deferred tool calls a session's run waits on (see EVENT_KIND_INPUT_REQUIRED):
     * approvals and external results. Answers may come in several calls; once every call has one,
     * the run goes on, on whichever worker claims it, in the same stream. Idempotent: a retry with
     * the same answers returns what the first call did. INVALID_ARGUMENT for no answers, a call id
     * given twice, a call the run does not wait on, or an answer of the wrong kind; NOT_FOUND for a
     * run the session never had (other users' sessions are never found); FAILED_PRECONDITION for a
     * run that does not wait (any more: it runs, ended, was cancelled or its wait expired) or a call
     * that already has another answer; UNAVAILABLE while Redis does not answer (retry).
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<io.github.pydanticaistream.v1.RespondResponse> respond(
        io.github.pydanticaistream.v1.RespondRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getRespondMethod(), getCallOptions()), request);
    }
  }

  private static final int METHODID_RUN = 0;
  private static final int METHODID_LISTEN = 1;
  private static final int METHODID_CANCEL = 2;
  private static final int METHODID_LIST_ACTIVE = 3;
  private static final int METHODID_RESPOND = 4;

  private static final class MethodHandlers<Req, Resp> implements
      io.grpc.stub.ServerCalls.UnaryMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.ServerStreamingMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.ClientStreamingMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.BidiStreamingMethod<Req, Resp> {
    private final AgentStreamServiceImplBase serviceImpl;
    private final int methodId;

    MethodHandlers(AgentStreamServiceImplBase serviceImpl, int methodId) {
      this.serviceImpl = serviceImpl;
      this.methodId = methodId;
    }

    @java.lang.Override
    @java.lang.SuppressWarnings("unchecked")
    public void invoke(Req request, io.grpc.stub.StreamObserver<Resp> responseObserver) {
      switch (methodId) {
        case METHODID_RUN:
          serviceImpl.run((io.github.pydanticaistream.v1.RunRequest) request,
              (io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.RunResponse>) responseObserver);
          break;
        case METHODID_LISTEN:
          serviceImpl.listen((io.github.pydanticaistream.v1.ListenRequest) request,
              (io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.ListenResponse>) responseObserver);
          break;
        case METHODID_CANCEL:
          serviceImpl.cancel((io.github.pydanticaistream.v1.CancelRequest) request,
              (io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.CancelResponse>) responseObserver);
          break;
        case METHODID_LIST_ACTIVE:
          serviceImpl.listActive((io.github.pydanticaistream.v1.ListActiveRequest) request,
              (io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.ListActiveResponse>) responseObserver);
          break;
        case METHODID_RESPOND:
          serviceImpl.respond((io.github.pydanticaistream.v1.RespondRequest) request,
              (io.grpc.stub.StreamObserver<io.github.pydanticaistream.v1.RespondResponse>) responseObserver);
          break;
        default:
          throw new AssertionError();
      }
    }

    @java.lang.Override
    @java.lang.SuppressWarnings("unchecked")
    public io.grpc.stub.StreamObserver<Req> invoke(
        io.grpc.stub.StreamObserver<Resp> responseObserver) {
      switch (methodId) {
        default:
          throw new AssertionError();
      }
    }
  }

  private static abstract class AgentStreamServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoFileDescriptorSupplier, io.grpc.protobuf.ProtoServiceDescriptorSupplier {
    AgentStreamServiceBaseDescriptorSupplier() {}

    @java.lang.Override
    public com.google.protobuf.Descriptors.FileDescriptor getFileDescriptor() {
      return io.github.pydanticaistream.v1.StreamProto.getDescriptor();
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.ServiceDescriptor getServiceDescriptor() {
      return getFileDescriptor().findServiceByName("AgentStreamService");
    }
  }

  private static final class AgentStreamServiceFileDescriptorSupplier
      extends AgentStreamServiceBaseDescriptorSupplier {
    AgentStreamServiceFileDescriptorSupplier() {}
  }

  private static final class AgentStreamServiceMethodDescriptorSupplier
      extends AgentStreamServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoMethodDescriptorSupplier {
    private final String methodName;

    AgentStreamServiceMethodDescriptorSupplier(String methodName) {
      this.methodName = methodName;
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.MethodDescriptor getMethodDescriptor() {
      return getServiceDescriptor().findMethodByName(methodName);
    }
  }

  private static volatile io.grpc.ServiceDescriptor serviceDescriptor;

  public static io.grpc.ServiceDescriptor getServiceDescriptor() {
    io.grpc.ServiceDescriptor result = serviceDescriptor;
    if (result == null) {
      synchronized (AgentStreamServiceGrpc.class) {
        result = serviceDescriptor;
        if (result == null) {
          serviceDescriptor = result = io.grpc.ServiceDescriptor.newBuilder(SERVICE_NAME)
              .setSchemaDescriptor(new AgentStreamServiceFileDescriptorSupplier())
              .addMethod(getRunMethod())
              .addMethod(getListenMethod())
              .addMethod(getCancelMethod())
              .addMethod(getListActiveMethod())
              .addMethod(getRespondMethod())
              .build();
        }
      }
    }
    return result;
  }
}
