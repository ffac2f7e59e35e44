import assert from "node:assert/strict";
import { test } from "node:test";

import type { JsonObject } from "@bufbuild/protobuf";

import {
  BusyPolicy,
  AttachmentKind,
  DeferredCallKind,
  RunState,
  Code,
  ConnectError,
  EventKind,
  EventType,
  MAX_BATCH_EVENTS,
  PartKind,
  StreamClient,
  ToolOutcome,
  Transcript,
  approve,
  deny,
  eventBody,
  externalResult,
  inputCalls,
  retry,
  type Event,
} from "../src/index.js";
import { quickstart } from "../examples/quickstart.js";
import { serveTools } from "../examples/external_tool.js";
import { SERVER, startFront, startProxy, TOKENS } from "./harness.js";

const alice = new StreamClient({ baseUrl: SERVER, token: TOKENS.alice });

async function collect(events: AsyncIterable<Event>): Promise<Event[]> {
  const all: Event[] = [];
  for await (const event of events) all.push(event);
  return all;
}

/** `promise`, or a failure naming `what` after `ms`. */
async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not within ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads `events` until one matches, leaving the iterator open for more. */
async function until(events: AsyncIterator<Event>, match: (event: Event) => boolean): Promise<Event[]> {
  const seen: Event[] = [];
  for (;;) {
    const next = await events.next();
    if (next.done) throw new Error(`stream ended first: ${seen.map((e) => e.typeName).join(",")}`);
    seen.push(next.value);
    if (match(next.value)) return seen;
  }
}

test("run then listen: begin ... end with typed fields", async () => {
  const started = await alice.run("weather", "ts-1", "weather in Paris?");
  assert.ok(started.runId);
  const events = await collect(alice.listen("ts-1"));
  assert.equal(events[0]?.type, EventType.BEGIN);
  assert.equal(events[0]?.id, started.beginEventId);
  assert.equal(events.at(-1)?.type, EventType.END);

  const call = events.find((e) => e.partKind === PartKind.TOOL_CALL);
  assert.ok(call);
  assert.equal(call.kind, EventKind.PART_START);
  assert.equal(call.toolName, "get_weather");
  assert.equal(call.toolCallId, "call-1");
  assert.deepEqual(call.args, { city: "Paris" });
  assert.equal(call.idx, 0);

  const ret = events.find((e) => e.partKind === PartKind.TOOL_RETURN);
  assert.ok(ret);
  assert.equal(ret.toolCallId, "call-1");
  assert.equal(ret.content, "sunny in Paris");

  const text = events.filter((e) => e.partKind === PartKind.TEXT).map((e) => e.content ?? e.contentDelta).join("");
  assert.equal(text, "It is sunny.");
  assert.ok(events.some((e) => e.kind === EventKind.PART_DELTA && e.contentDelta !== undefined));
  assert.ok(events.some((e) => e.kind === EventKind.ANSWER));
  assert.deepEqual(eventBody(events[0]!).user_prompt, "weather in Paris?");
});

test("a run's context and attachments reach the agent; begin shows only their summary", async () => {
  const png = new Uint8Array([0x89, 0x50, 0x4e, 0x47, 1, 2, 3]);
  await alice.run("seeing_any", "ts-inputs", "look", {
    context: { locale: "fr", account: 42 },
    attachments: [
      { data: png, mediaType: "image/png", name: "scan.png" },
      { url: "https://example.com/report.pdf", kind: AttachmentKind.DOCUMENT },
    ],
  });
  const events = await collect(alice.listen("ts-inputs"));
  assert.deepEqual(eventBody(events[0]!).attachments, [
    { kind: "image", media_type: "image/png", size: 7, name: "scan.png" },
    { kind: "document", media_type: "application/pdf", url: "https://example.com/report.pdf" },
  ]);
  const text = events.filter((e) => e.partKind === PartKind.TEXT).map((e) => e.content ?? e.contentDelta).join("");
  assert.deepEqual(text.split("\n").slice(0, 4), [
    'instructions=context {"account": 42, "locale": "fr"}',
    "text=look",
    "binary=image/png:7:scan.png",
    "document-url=application/pdf:https://example.com/report.pdf",
  ]);
  await assert.rejects(
    alice.run("seeing_any", "ts-inputs-2", "look", { attachments: [{ url: "ftp://example.com/a.png" }] }),
    (error: unknown) => ConnectError.from(error).code === Code.InvalidArgument,
  );
});

test("resume after an id: nothing lost, nothing repeated", async () => {
  await alice.run("weather", "ts-2", "hi");
  const all = await collect(alice.listen("ts-2"));
  for (const k of [0, 3, all.length - 2]) {
    const resumed = await collect(alice.listen("ts-2", { after: all[k]!.id }));
    assert.deepEqual(resumed.map((e) => e.id), all.slice(k + 1).map((e) => e.id));
  }
});

test("a dropped connection is resumed after the last event: nothing lost, nothing repeated", async () => {
  const proxy = await startProxy(SERVER);
  try {
    const flaky = new StreamClient({ baseUrl: proxy.baseUrl, token: TOKENS.alice });
    await alice.run("stalling", "ts-5", "go");
    const events = flaky.listen("ts-5", { backoffMs: 20 })[Symbol.asyncIterator]();
    const before = await until(events, (e) => e.contentDelta === "hard ");
    proxy.cut();
    assert.equal(await alice.cancel("ts-5"), true);
    const afterCut = await until(events, (e) => e.type === EventType.END);
    assert.ok(proxy.accepted >= 2, "the client reconnected");
    const ids = [...before, ...afterCut].map((e) => e.id);
    assert.deepEqual(ids, (await collect(alice.listen("ts-5"))).map((e) => e.id));
    assert.equal(afterCut.at(-2)?.type, EventType.ERROR);
  } finally {
    await proxy.close();
  }
});

test("resuming a live run right after dropping the listen: nothing lost, nothing repeated", async () => {
  // Demo runs (a word every 60 ms: live when resumed), each joined late so that the server has sent
  // more than the client read when it drops the Listen, by `break` or by its signal, and resumes at once.
  const trial = async (trial: number): Promise<void> => {
    const session = `ts-resume-${trial}`;
    await alice.run("demo", session, "count these words please");
    const early = alice.listen(session)[Symbol.asyncIterator]();
    await until(early, (e) => e.partKind === PartKind.TEXT);
    await early.return();
    const dropped = new AbortController();
    const events = alice.listen(session, { signal: dropped.signal })[Symbol.asyncIterator]();
    const head: Event[] = [];
    while (head.length < 2 + trial) head.push((await events.next()).value as Event);
    if (trial % 2 === 0) {
      await events.return(); // as a `break` out of `for await` does
    } else {
      dropped.abort();
      await assert.rejects(events.next(), (error: unknown) => ConnectError.from(error).code === Code.Canceled);
    }
    const resumed = await collect(alice.listen(session, { after: head.at(-1)!.id }));
    const full = await collect(alice.listen(session));
    assert.deepEqual([...head, ...resumed].map((e) => e.id), full.map((e) => e.id));
    assert.deepEqual([...head, ...resumed], full);
    assert.equal(full.at(-1)?.type, EventType.END);
  };
  await Promise.all([0, 1, 2, 3].map(trial));
});

test("a silence limit ends the listen with DeadlineExceeded after the events so far", async () => {
  await alice.run("stalling", "ts-6", "go");
  const received: Event[] = [];
  const started = performance.now();
  await assert.rejects(
    (async () => {
      for await (const event of alice.listen("ts-6", { timeoutSeconds: 1 })) received.push(event);
    })(),
    (error: unknown) => ConnectError.from(error).code === Code.DeadlineExceeded && /resume after/.test(String(error)),
  );
  assert.ok(performance.now() - started < 5_000, "not retried");
  assert.equal(received.map((e) => e.content ?? e.contentDelta ?? "").join(""), "thinking hard ");
  assert.deepEqual(await alice.listActive(), ["ts-6"], "the run itself goes on");
  assert.equal(await alice.cancel("ts-6"), true);
});

test("a listen resumed after end returns at once with nothing", async () => {
  await alice.run("weather", "ts-7", "hi");
  const all = await collect(alice.listen("ts-7"));
  const started = performance.now();
  assert.deepEqual(await collect(alice.listen("ts-7", { after: all.at(-1)!.id, waitSeconds: 3, retries: 0 })), []);
  assert.ok(performance.now() - started < 500, "at once");
});

test("a listen that closes OK before end is resumed after its last event", async () => {
  await alice.run("weather", "ts-8", "hi");
  const full = await collect(alice.listen("ts-8"));
  const front = await startFront(SERVER, TOKENS.alice, 3);
  try {
    const events = await collect(new StreamClient({ baseUrl: front.baseUrl }).listen("ts-8", { backoffMs: 10 }));
    assert.deepEqual(events, full);
    assert.equal(front.calls, Math.ceil(full.length / 3), "one call per 3 events, each resumed");
  } finally {
    await front.close();
  }
});

test("a listen from the start that keeps closing OK with nothing throws once the retries are spent", async () => {
  await alice.run("weather", "ts-9", "hi");
  const front = await startFront(SERVER, TOKENS.alice, 0);
  try {
    const client = new StreamClient({ baseUrl: front.baseUrl });
    await assert.rejects(
      collect(client.listen("ts-9", { retries: 2, backoffMs: 10 })),
      (error: unknown) => ConnectError.from(error).code === Code.Unavailable,
    );
    assert.equal(front.calls, 3);
  } finally {
    await front.close();
  }
});

test("breaking out of a listen ends its call", async () => {
  await alice.run("stalling", "ts-10", "go");
  const front = await startFront(SERVER, TOKENS.alice);
  try {
    for await (const event of new StreamClient({ baseUrl: front.baseUrl }).listen("ts-10")) {
      if (event.contentDelta === "hard ") break; // the run goes on, silent: only the client can end the call
    }
    await within(2_000, front.idle(), "the call ended");
  } finally {
    await front.close();
    await alice.cancel("ts-10");
  }
});

/** The prompt of the `echo` agent's long runs: a word a token, so a late listener is far behind. */
const LONG_PROMPT = Array.from({ length: 600 }, (_, i) => `w${i}`).join(" ");

/** Starts a long run on `session` and returns its events once it ended, listened to one a response. */
async function longRun(session: string): Promise<Event[]> {
  await alice.run("echo", session, LONG_PROMPT);
  const events: Event[] = [];
  for await (const { payload } of alice.rpc.listen({ sessionId: session })) {
    assert.notEqual(payload.case, "events", "a Listen without maxBatchEvents never gets a batch");
    if (payload.case === "event") events.push(payload.value);
  }
  assert.equal(events.at(-1)?.type, EventType.END);
  return events;
}

/** Whether stream entry ids ("ms-seq") strictly increase. */
function increasing(ids: string[]): boolean {
  const keys = ids.map((id) => id.split("-").map(BigInt) as [bigint, bigint]);
  return keys.every(([ms, seq], i) => i === 0 || ms > keys[i - 1]![0] || (ms === keys[i - 1]![0] && seq > keys[i - 1]![1]));
}

test("a late listener of a long run gets its events in batches, yielded once each, in order", async () => {
  const single = await longRun("ts-13");
  assert.ok(single.filter((e) => e.kind === EventKind.PART_DELTA).length >= 599);
  const front = await startFront(SERVER, TOKENS.alice);
  try {
    const events = await collect(new StreamClient({ baseUrl: front.baseUrl }).listen("ts-13"));
    assert.deepEqual(front.asked, [MAX_BATCH_EVENTS], "one Listen, asking for batches");
    assert.ok(front.batches >= 2, `the catch-up spans several batches: ${front.batches}`);
    assert.deepEqual(events, single);
    assert.ok(increasing(events.map((e) => e.id)));
    const transcript = new Transcript();
    for (const event of events) transcript.apply(event);
    assert.equal(transcript.text(), LONG_PROMPT);
    assert.ok(transcript.ended);
  } finally {
    await front.close();
  }
});

test("a listen closed partway through a batch resumes after the last event it yielded", async () => {
  const single = await longRun("ts-14");
  const front = await startFront(SERVER, TOKENS.alice, 100); // 100 events a call: batches cut short
  try {
    const events = await collect(new StreamClient({ baseUrl: front.baseUrl }).listen("ts-14", { backoffMs: 10 }));
    assert.deepEqual(events, single);
    assert.equal(front.calls, Math.ceil(single.length / 100), "each call resumed after the last event");
    assert.ok(front.batches >= front.calls - 1, `batches: ${front.batches}`);
    assert.ok(front.asked.every((most) => most === MAX_BATCH_EVENTS));
  } finally {
    await front.close();
  }
});

test("a server that refuses maxBatchEvents is asked again without it, and the client remembers", async () => {
  const single = await longRun("ts-15");
  const front = await startFront(SERVER, TOKENS.alice, Infinity, { refusesBatches: true });
  try {
    const client = new StreamClient({ baseUrl: front.baseUrl });
    assert.deepEqual(await collect(client.listen("ts-15")), single);
    assert.deepEqual(await collect(client.listen("ts-15")), single);
    assert.deepEqual(front.asked, [MAX_BATCH_EVENTS, 0, 0]);
    assert.equal(front.batches, 0);
  } finally {
    await front.close();
  }
});

test("cancel mid-stream ends the run with error then end", async () => {
  await alice.run("stalling", "ts-3", "go");
  const events = alice.listen("ts-3")[Symbol.asyncIterator]();
  await until(events, (e) => e.contentDelta === "hard ");
  assert.deepEqual(await alice.listActive(), ["ts-3"]);
  const started = performance.now();
  assert.equal(await alice.cancel("ts-3"), true);
  const rest = await until(events, (e) => e.type === EventType.END);
  assert.ok(performance.now() - started < 500, "the run ended promptly");
  const error = rest.at(-2)!;
  assert.equal(error.type, EventType.ERROR);
  assert.deepEqual(eventBody(error), { msg: "canceled" });
  assert.equal(await alice.cancel("ts-3"), false);
  assert.deepEqual(await alice.listActive(), []);
});

/** The events of the session's run `runId`: Listen gives the current run, so listen again until it is that one. */
async function eventsOfRun(session: string, runId: string, ms: number): Promise<Event[]> {
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    const events = await collect(alice.listen(session));
    if (eventBody(events[0]!).run_id === runId) return events;
  }
  throw new Error(`run ${runId} did not begin within ${ms} ms`);
}

test("a run enqueued on a busy session waits, starts when the session's run ended, and runs", async () => {
  await alice.run("stalling", "ts-12", "go");
  const first = alice.listen("ts-12")[Symbol.asyncIterator]();
  await until(first, (e) => e.contentDelta === "hard ");
  await first.return();
  const enqueue = { ifBusy: BusyPolicy.ENQUEUE, runId: "ts-12-next" };
  const waiting = await alice.run("weather", "ts-12", "weather?", enqueue);
  assert.deepEqual([waiting.runId, waiting.beginEventId, waiting.waiting], ["ts-12-next", "", true]);
  assert.deepEqual(await alice.run("weather", "ts-12", "weather?", enqueue), waiting, "a retry is the same run");
  for (const ifBusy of [undefined, BusyPolicy.REJECT]) {
    await assert.rejects(
      alice.run("weather", "ts-12", "weather?", { ifBusy }),
      (error: unknown) => ConnectError.from(error).code === Code.AlreadyExists,
    );
  }
  assert.equal(await alice.cancel("ts-12"), true);
  const events = await eventsOfRun("ts-12", "ts-12-next", 10_000);
  assert.deepEqual(eventBody(events[0]!), { session_id: "ts-12", run_id: "ts-12-next", agent: "weather", user_prompt: "weather?" });
  assert.deepEqual(events.filter((e) => e.type !== EventType.EVENT).map((e) => e.type), [EventType.BEGIN, EventType.END]);
  const text = events.filter((e) => e.partKind === PartKind.TEXT).map((e) => e.content ?? e.contentDelta).join("");
  assert.equal(text, "It is sunny.");
});

test("a wrong bearer token is UNAUTHENTICATED", async () => {
  const intruder = new StreamClient({ baseUrl: SERVER, token: "wrong" });
  await assert.rejects(intruder.listActive(), (error: unknown) => ConnectError.from(error).code === Code.Unauthenticated);
});

test("another user cannot see or cancel the session", async () => {
  const bob = new StreamClient({ baseUrl: SERVER, token: TOKENS.bob });
  await alice.run("stalling", "ts-4", "go");
  const events = alice.listen("ts-4")[Symbol.asyncIterator]();
  await until(events, (e) => e.contentDelta === "hard ");
  assert.deepEqual(await bob.listActive(), []);
  assert.equal(await bob.cancel("ts-4"), false);
  await assert.rejects(collect(bob.listen("ts-4", { waitSeconds: 1 })), (error: unknown) => ConnectError.from(error).code === Code.NotFound);
  assert.equal(await alice.cancel("ts-4"), true);
  await until(events, (e) => e.type === EventType.END);
});

test("the quickstart example streams the demo agent's answer", async () => {
  const answer = await quickstart(SERVER, TOKENS.alice, "demo", "count these four words");
  assert.match(answer, /^You said 4 words/);
});

test("a transcript of the demo agent's run holds its text, tool call and return", async () => {
  await alice.run("demo", "ts-11", "count these four words");
  const events = await collect(alice.listen("ts-11"));
  const transcript = new Transcript();
  assert.deepEqual(events.filter((e) => transcript.apply(e)), [], "no resume: nothing superseded");
  const text = events.filter((e) => e.partKind === PartKind.TEXT).map((e) => e.content ?? e.contentDelta).join("");
  assert.equal(transcript.text(), text);
  assert.match(text, /^You said 4 words at /);
  assert.deepEqual([transcript.ended, transcript.attempt, transcript.error], [true, 1, undefined]);
  const [thinking, call, ret] = transcript.nodes[0]?.parts ?? [];
  assert.equal(thinking?.content, "The user said something; let me count its words first.");
  assert.deepEqual([call?.toolName, call?.args, ret?.toolCallId, ret?.content], [
    "count_words",
    { text: "count these four words" },
    "count-1",
    "4",
  ]);
});

/** Starts a run of the `ops` agent, listens to its `input_required` event, and waits until ListActive says so. */
async function waiting(sessionId: string): Promise<{ runId: string; event: Event }> {
  const { runId } = await alice.run("ops", sessionId, "clean up");
  const events = alice.listen(sessionId)[Symbol.asyncIterator]();
  const seen = await within(20_000, until(events, (e) => e.kind === EventKind.INPUT_REQUIRED), "input_required");
  const event = seen.at(-1)!;
  await events.return?.();
  const deadline = Date.now() + 20_000;
  for (;;) {
    const { sessions } = await alice.rpc.listActive({});
    const listed = sessions.find((s) => s.sessionId === sessionId);
    if (listed?.state === RunState.WAITING_FOR_INPUT && listed.runId === runId) break;
    assert.ok(Date.now() < deadline, "ListActive shows the run waiting for input");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { runId, event };
}

test("a waiting run: an approval and an external result answered with respond, the run goes on", async () => {
  const { runId, event } = await waiting("ts-w1");
  assert.deepEqual(inputCalls(event), [
    { toolCallId: "c1", toolName: "drop_db", args: { name: "staging" }, kind: DeferredCallKind.APPROVAL },
    { toolCallId: "c2", toolName: "page", args: { msg: "db" }, kind: DeferredCallKind.EXTERNAL },
  ]);
  assert.ok(Number(event.deadlineUnixMs) > Date.now());
  const held = await alice.respond("ts-w1", runId, [approve("c1")]);
  assert.deepEqual([held.continued, held.pendingCallIds], [false, ["c2"]]);
  const answer = [externalResult("c2", { ack: true })];
  const done = await alice.respond("ts-w1", runId, answer);
  assert.deepEqual([done.continued, done.pendingCallIds], [true, []]);
  const rest = await within(20_000, collect(alice.listen("ts-w1", { after: event.id })), "the run's end");
  const returns = rest.filter((e) => e.partKind === PartKind.TOOL_RETURN).map((e) => [e.toolCallId, e.content]);
  assert.deepEqual(returns.sort(), [["c1", "dropped staging"], ["c2", '{"ack": true}']]);
  const text = rest.filter((e) => e.partKind === PartKind.TEXT).map((e) => e.content ?? e.contentDelta).join("");
  assert.equal(text, "done: drop_db=dropped staging; page={'ack': True}");
  assert.equal(rest.at(-1)?.type, EventType.END);
  const again = await alice.respond("ts-w1", runId, answer);
  assert.deepEqual([again.continued, again.pendingCallIds], [true, []], "a retry answers as the first did");
  assert.deepEqual(await alice.listActive(), []);
});

test("a denial and a retry reach the model; another user's answer is NotFound", async () => {
  const { runId, event } = await waiting("ts-w2");
  const bob = new StreamClient({ baseUrl: SERVER, token: TOKENS.bob });
  const code = (expected: Code) => (e: unknown) => ConnectError.from(e).code === expected;
  await assert.rejects(bob.respond("ts-w2", runId, [approve("c1")]), code(Code.NotFound));
  await assert.rejects(alice.respond("ts-w2", runId, [approve("c2")]), code(Code.InvalidArgument), "c2 is external");
  const done = await alice.respond("ts-w2", runId, [deny("c1", "not on Fridays"), retry("c2", "pager down")]);
  assert.equal(done.continued, true);
  const rest = await within(20_000, collect(alice.listen("ts-w2", { after: event.id })), "the run's end");
  const denied = rest.find((e) => e.partKind === PartKind.TOOL_RETURN && e.toolCallId === "c1");
  assert.equal(denied?.outcome, ToolOutcome.DENIED);
  const text = rest.filter((e) => e.partKind === PartKind.TEXT).map((e) => e.content ?? e.contentDelta).join("");
  assert.match(text, /^done: drop_db=not on Fridays; page=pager down/);
});

test("the external-tool example answers the oncall agent's page call, and the run goes on", async () => {
  const { runId } = await alice.run("oncall", "ts-w3", "the db is down");
  const asked: JsonObject[] = [];
  const page = async (args: JsonObject): Promise<JsonObject> => {
    asked.push(args);
    return { paged: "alice" };
  };
  const text = await within(20_000, serveTools(alice, "ts-w3", runId, { page }), "the run's end");
  assert.deepEqual(asked, [{ msg: "db down" }]);
  assert.equal(text, "paged: page={'paged': 'alice'}");
});
