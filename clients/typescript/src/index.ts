/**
 * A typed client for the pydantic-ai-stream gRPC service: start agent runs, stream their events
 * (resuming after the last event id when the connection drops), cancel runs, list live sessions,
 * answer runs that wait for input (`respond` with `approve`, `deny`, `externalResult`, `retry`); and a
 * `Transcript` that folds a run's events into its output, without what a resumed run superseded.
 */
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { create, fromJson, type JsonObject, type JsonValue, type MessageInitShape } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import {
  AgentStreamService,
  ApprovalSchema,
  DeferredCallKind,
  AttachmentKind,
  AttachmentSchema,
  BusyPolicy,
  EventKind,
  EventType,
  PartKind,
  ToolOutcome,
  ToolAnswerSchema,
  type Event,
  type ListenResponse,
  type RespondResponse,
  type RunResponse,
  type ToolAnswer,
} from "./gen/pydantic_ai_stream/v1/stream_pb.js";

export * from "./gen/pydantic_ai_stream/v1/stream_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";

export interface StreamClientOptions {
  /** The server, e.g. "http://localhost:50051" (https:// for TLS). */
  baseUrl: string;
  /** Bearer token, sent as `authorization: Bearer <token>`. */
  token?: string;
  /** TLS options for https:// (CA, client certificate for mTLS), passed to Node's http2. */
  tls?: { ca?: string | Buffer; cert?: string | Buffer; key?: string | Buffer };
}

export interface RunOptions {
  /** A run id of your own: retrying Run with it returns the same run instead of ALREADY_EXISTS. */
  runId?: string;
  /** pydantic-ai model settings the server allows, e.g. { temperature: 0.2 }. */
  modelSettings?: JsonObject;
  /**
   * What to do if the session has a queued or live run (default REJECT: AlreadyExists). ENQUEUE: this
   * run waits behind it (the response says `waiting`); INTERRUPT and ROLLBACK cancel it first.
   */
  ifBusy?: BusyPolicy;
  /** Request context for the hosted agent's deps (`ctx.deps.context`), e.g. { locale: "fr", account: 42 }. */
  context?: JsonObject;
  /** Files for the model after the prompt's text: bytes with a media type, or an http(s) URL. */
  attachments?: AttachmentInput[];
  timeoutMs?: number;
}

/** An attachment of `run`: `data` with its `mediaType`, or a `url` (`mediaType` optional when its path ends
 * in a known extension); `kind` defaults to what the media type says; `name` is what the model may call it. */
export type AttachmentInput = ({ data: Uint8Array; mediaType: string } | { url: string; mediaType?: string }) & {
  kind?: AttachmentKind;
  name?: string;
};

function attachmentOf(input: AttachmentInput): MessageInitShape<typeof AttachmentSchema> {
  const source =
    "data" in input ? { case: "data" as const, value: input.data } : { case: "url" as const, value: input.url };
  const kind = input.kind ?? AttachmentKind.UNSPECIFIED;
  return { source, mediaType: input.mediaType ?? "", kind, name: input.name ?? "" };
}

export interface ListenOptions {
  /** Resume strictly after this event id. */
  after?: string;
  /** Seconds to wait for the session's stream to appear, then NotFound (0: the server's default, 3). */
  waitSeconds?: number;
  /** Seconds of silence after which `listen` throws DeadlineExceeded (0, the default: no limit). */
  timeoutSeconds?: number;
  /** Reconnects in a row before giving up (default 5), `backoffMs` apart, doubling (default 200). */
  retries?: number;
  backoffMs?: number;
  signal?: AbortSignal;
}

/**
 * Status codes after which `listen` reconnects and resumes instead of failing. A connection cut
 * under an HTTP/2 stream surfaces as Canceled (RST_STREAM CANCEL), so that one is retried too,
 * unless the caller's own signal aborted.
 */
const RETRYABLE = new Set([Code.Unavailable, Code.Internal, Code.Unknown, Code.Canceled]);

/** Most events `listen` asks the server to send in one response when it is behind (yielded one by one). */
export const MAX_BATCH_EVENTS = 256;

/** A Listen response's events: one, several that were ready together (a batch), or none (a heartbeat). */
function eventsOf({ payload }: ListenResponse): Event[] {
  if (payload.case === "event") return [payload.value];
  return payload.case === "events" ? payload.value.events : [];
}

/** A server that does not know `ListenRequest.maxBatchEvents` refuses requests that set it. */
function refusesBatches(error: ConnectError): boolean {
  return error.code === Code.InvalidArgument && error.rawMessage.includes("fields this server does not know");
}

export class StreamClient {
  /** The generated Connect client, for calls the wrapper does not cover. */
  readonly rpc: Client<typeof AgentStreamService>;
  /** The server refused `maxBatchEvents` (it is older): Listen without it. */
  #unbatched = false;

  constructor(options: StreamClientOptions) {
    const interceptors: Interceptor[] = [];
    if (options.token !== undefined) {
      const authorization = `Bearer ${options.token}`;
      interceptors.push((next) => async (request) => {
        request.header.set("authorization", authorization);
        return await next(request);
      });
    }
    const transport = createGrpcTransport({ baseUrl: options.baseUrl, interceptors, nodeOptions: options.tls });
    this.rpc = createClient(AgentStreamService, transport);
  }

  /**
   * Start a run of a hosted agent; resolves once its `begin` event is in the stream, or, with `waiting`
   * and no `beginEventId`, once it waits behind the session's run (`ifBusy: BusyPolicy.ENQUEUE`).
   * Retrying with the same `runId` is safe under every policy.
   */
  async run(agent: string, sessionId: string, prompt: string, options: RunOptions = {}): Promise<RunResponse> {
    const { runId = "", modelSettings, ifBusy = BusyPolicy.REJECT, context } = options;
    const attachments = (options.attachments ?? []).map(attachmentOf);
    return await this.rpc.run(
      { agent, sessionId, prompt, runId, modelSettings, ifBusy, context, attachments },
      { timeoutMs: options.timeoutMs ?? 30_000 },
    );
  }

  /**
   * The session's events up to `end`; a dropped stream is resumed after the last event seen. It
   * returns only after `end`, or at once when `after` is `end`'s id; a limit that ends the Listen
   * early throws its ConnectError: DeadlineExceeded (`timeoutSeconds`), NotFound (`waitSeconds`),
   * OutOfRange (a trimmed cursor). Events that are ready together come in one response (up to
   * `MAX_BATCH_EVENTS`), still yielded one by one; a server that does not batch is asked without it.
   */
  async *listen(sessionId: string, options: ListenOptions = {}): AsyncGenerator<Event, void, undefined> {
    let after = options.after ?? "";
    let attempt = 0;
    let delivered = false;
    const retries = options.retries ?? 5;
    const backoffMs = options.backoffMs ?? 200;
    for (;;) {
      // Connect's stream iterator has no `return`: leaving the loop early ends the call only through this.
      const call = new AbortController();
      const abort = (): void => call.abort(options.signal?.reason);
      options.signal?.addEventListener("abort", abort);
      if (options.signal?.aborted) abort();
      const maxBatchEvents = this.#unbatched ? 0 : MAX_BATCH_EVENTS;
      try {
        const responses = this.rpc.listen(
          {
            sessionId,
            afterEventId: after,
            waitSeconds: options.waitSeconds ?? 0,
            timeoutSeconds: options.timeoutSeconds ?? 0,
            maxBatchEvents,
          },
          { signal: call.signal },
        );
        for await (const response of responses) {
          const events = eventsOf(response);
          if (events.length > 0) attempt = 0; // not for a heartbeat
          for (const event of events) {
            if (call.signal.aborted) break; // the caller aborted mid-batch: the call's own error comes next
            after = event.id; // the last event the caller got, however far into a batch
            delivered = true;
            yield event;
            if (event.type === EventType.END) return;
          }
        }
        if (after !== "" && !delivered) return; // resumed after `end`: the server closes such a Listen at once
        // Closed OK before `end` (an older server's timeout, a proxy): not the run's end, so resumed.
        throw new ConnectError(`Listen closed before \`end\` (last event: ${after || "none"})`, Code.Unavailable);
      } catch (error) {
        const connectError = ConnectError.from(error);
        if (maxBatchEvents > 0 && refusesBatches(connectError) && !options.signal?.aborted) {
          this.#unbatched = true; // a server older than `maxBatchEvents`: ask it again without
          continue;
        }
        if (!RETRYABLE.has(connectError.code) || attempt >= retries || options.signal?.aborted) throw connectError;
      } finally {
        options.signal?.removeEventListener("abort", abort);
        call.abort(); // a caller that stops early (break, return) ends the call, and the server's reads, now
      }
      await new Promise((resolve) => setTimeout(resolve, backoffMs * 2 ** attempt)); // reconnect back-off
      attempt += 1;
    }
  }

  /** Stop the session's live run, wherever it runs; true if there was one. */
  async cancel(sessionId: string): Promise<boolean> {
    return (await this.rpc.cancel({ sessionId }, { timeoutMs: 10_000 })).cancelled;
  }

  /**
   * Answer the deferred tool calls the session's run `runId` waits on (`approve`, `deny`, `externalResult`,
   * `retry`): once every call has an answer the run goes on (`continued`), else `pendingCallIds` says which
   * still need one. Safe to retry: a retry answers as the first call did.
   */
  async respond(sessionId: string, runId: string, answers: ToolAnswer[]): Promise<RespondResponse> {
    return await this.rpc.respond({ sessionId, runId, answers }, { timeoutMs: 10_000 });
  }

  /** Session ids of your live runs. */
  async listActive(): Promise<string[]> {
    return (await this.rpc.listActive({}, { timeoutMs: 10_000 })).sessions.map((s) => s.sessionId);
  }
}

/** An event's body as the library wrote it (the source of truth for custom events). */
export function eventBody(event: Event): Record<string, unknown> {
  return event.bodyJson ? (JSON.parse(event.bodyJson) as Record<string, unknown>) : {};
}

/** A call an `input_required` event waits on, with its arguments as a plain object. */
export interface InputCall {
  toolCallId: string;
  toolName: string;
  args: JsonObject;
  /** APPROVAL: answer with `approve` or `deny`; EXTERNAL, QUESTION: with `externalResult` or `retry`. */
  kind: DeferredCallKind;
}

/** The calls an `EventKind.INPUT_REQUIRED` event waits on (none for another event). */
export function inputCalls(event: Event): InputCall[] {
  if (event.kind !== EventKind.INPUT_REQUIRED) return [];
  return event.calls.map((call) => ({
    toolCallId: call.toolCallId,
    toolName: call.toolName,
    args: call.args ?? {},
    kind: call.kind,
  }));
}

/** An approval: the tool runs (with `overrideArgs` instead of the model's, if given). */
export function approve(toolCallId: string, overrideArgs?: JsonObject): ToolAnswer {
  const approval = create(ApprovalSchema, { approved: true, overrideArgs });
  return create(ToolAnswerSchema, { toolCallId, answer: { case: "approval", value: approval } });
}

/** A denial: the tool does not run; the model is told `message`. */
export function deny(toolCallId: string, message = ""): ToolAnswer {
  const approval = create(ApprovalSchema, { approved: false, denialMessage: message });
  return create(ToolAnswerSchema, { toolCallId, answer: { case: "approval", value: approval } });
}

/** The result of an external call (or the answer to a question): `value`, any JSON value. */
export function externalResult(toolCallId: string, value: JsonValue): ToolAnswer {
  const outcome = { case: "value" as const, value: fromJson(ValueSchema, value) };
  return create(ToolAnswerSchema, { toolCallId, answer: { case: "result", value: { outcome } } });
}

/** An external call that failed: the model sees `message` as a retry prompt for it. */
export function retry(toolCallId: string, message: string): ToolAnswer {
  const outcome = { case: "retry" as const, value: message };
  return create(ToolAnswerSchema, { toolCallId, answer: { case: "result", value: { outcome } } });
}

/** A part of a node: a response part (with its `eventIdx`), or a tool return or retry prompt (without). */
export interface TranscriptPart {
  partKind: PartKind;
  partKindName: string;
  eventIdx?: number;
  /** Text and thinking: the start's content and every delta since; tool returns: the return value. */
  content: string;
  toolName?: string;
  toolCallId?: string;
  /** Tool calls: the complete arguments. */
  args?: JsonObject;
  outcome: ToolOutcome;
}

/** A node (model request) of a run: its response parts by `eventIdx`, then its tool returns as they came. */
export interface TranscriptNode {
  idx: number;
  parts: TranscriptPart[];
}

interface FoldedNode {
  response: Map<number, TranscriptPart>;
  returns: TranscriptPart[];
}

/** What a run has output so far, folded from its events with `apply`; a resume drops what it superseded. */
export class Transcript {
  /** The attempt the run goes on as: 1 until a worker died and another resumed it. */
  attempt = 1;
  /** The body of the last `error` event (e.g. `{ msg: "canceled" }`), or undefined. */
  error: Record<string, unknown> | undefined;
  /** Whether the run's `end` came. */
  ended = false;
  readonly #nodes = new Map<number, FoldedNode>();

  /** The nodes in `idx` order: response parts in `eventIdx` order, then tool returns in arrival order. */
  get nodes(): TranscriptNode[] {
    return [...this.#nodes.keys()]
      .sort((a, b) => a - b)
      .map((idx) => {
        const node = this.#nodes.get(idx)!;
        const response = [...node.response.keys()].sort((a, b) => a - b).map((i) => node.response.get(i)!);
        return { idx, parts: [...response, ...node.returns] };
      });
  }

  /** Folds one event in; true when it dropped output folded before (a resume), so a UI re-renders. */
  apply(event: Event): boolean {
    if (event.type === EventType.END) this.ended = true;
    else if (event.type === EventType.ERROR) this.error = eventBody(event);
    const idx = event.idx;
    if (idx === undefined) return false; // begin, end, error, custom events: no node
    if (event.kind === EventKind.RESUMED) {
      this.attempt = event.attempt;
      const superseded = [...this.#nodes.keys()].filter((i) => i >= idx);
      for (const i of superseded) this.#nodes.delete(i);
      return superseded.length > 0;
    }
    if (event.kind === EventKind.PART_DELTA) {
      // A listener that joined after a cursor may get deltas of a part it never saw start: nothing to extend.
      const part = this.#nodes.get(idx)?.response.get(event.eventIdx ?? -1);
      if (part !== undefined) part.content += event.contentDelta ?? "";
      return false;
    }
    let node = this.#nodes.get(idx);
    if (node === undefined) {
      node = { response: new Map(), returns: [] };
      this.#nodes.set(idx, node);
    }
    if (event.kind === EventKind.PART_START) {
      const part: TranscriptPart = {
        partKind: event.partKind,
        partKindName: event.partKindName,
        eventIdx: event.eventIdx,
        content: event.content ?? "",
        toolName: event.toolName,
        toolCallId: event.toolCallId,
        args: event.args,
        outcome: event.outcome,
      };
      if (part.eventIdx === undefined) node.returns.push(part);
      else node.response.set(part.eventIdx, part); // a response part sent again replaces the one before
    }
    return false;
  }

  /** The text parts' content, node after node: what the run has answered so far. */
  text(): string {
    return this.nodes
      .flatMap((node) => node.parts)
      .filter((part) => part.partKind === PartKind.TEXT)
      .map((part) => part.content)
      .join("");
  }
}
