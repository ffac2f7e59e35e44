import assert from "node:assert/strict";
import { test } from "node:test";

import { create, type MessageInitShape } from "@bufbuild/protobuf";

import { EventKind, EventSchema, EventType, PartKind, ToolOutcome, Transcript, type Event } from "../src/index.js";

type EventInit = MessageInitShape<typeof EventSchema>;

const event = (init: EventInit): Event =>
  create(EventSchema, { type: EventType.EVENT, typeName: "event", origin: "pydantic-ai", ...init });
const nodeBegin = (idx: number): Event => event({ idx, kind: EventKind.LLM_BEGIN });
const text = (idx: number, eventIdx: number, content: string): Event =>
  event({ idx, kind: EventKind.PART_START, eventIdx, partKind: PartKind.TEXT, partKindName: "text", content });
const delta = (idx: number, eventIdx: number, contentDelta: string): Event =>
  event({ idx, kind: EventKind.PART_DELTA, eventIdx, partKind: PartKind.TEXT, partDeltaKind: PartKind.TEXT, contentDelta });
const resumed = (idx: number, attempt: number): Event =>
  event({ idx, kind: EventKind.RESUMED, attempt, origin: "pydantic-ai-stream" });

const runtime = (type: EventType, typeName: string, bodyJson: string, origin = "pydantic-ai-stream"): Event =>
  create(EventSchema, { type, typeName, origin, bodyJson });
const BEGIN = runtime(EventType.BEGIN, "begin", '{"run_id": "r"}');
const END = runtime(EventType.END, "end", "{}");
const NODE_0 = [
  nodeBegin(0),
  text(0, 0, "Hel"),
  delta(0, 0, "lo"),
  event({
    idx: 0,
    kind: EventKind.PART_START,
    eventIdx: 1,
    partKind: PartKind.TOOL_CALL,
    partKindName: "tool-call",
    toolName: "count_words",
    toolCallId: "call-1",
    args: { text: "a b" },
  }),
  event({ idx: 0, kind: EventKind.LLM_END }),
  event({
    idx: 0,
    kind: EventKind.PART_START,
    partKind: PartKind.TOOL_RETURN,
    partKindName: "tool-return",
    toolName: "count_words",
    toolCallId: "call-1",
    content: "2",
  }),
];
const NODE_1_PARTIAL = [nodeBegin(1), text(1, 0, "par"), delta(1, 0, "tial")];

const fold = (transcript: Transcript, events: Event[]): boolean[] => events.map((e) => transcript.apply(e));

test("a resume drops the superseded node and the redone one follows", () => {
  const transcript = new Transcript();
  assert.deepEqual(fold(transcript, [BEGIN, ...NODE_0, ...NODE_1_PARTIAL]), Array(10).fill(false));
  assert.equal(transcript.text(), "Hellopartial");

  assert.equal(transcript.apply(resumed(1, 2)), true);
  assert.deepEqual(transcript.nodes.map((n) => n.idx), [0]);
  assert.equal(transcript.text(), "Hello");
  assert.equal(transcript.attempt, 2);

  const redone = [
    nodeBegin(1),
    text(1, 0, "final"),
    event({ idx: 1, kind: EventKind.ANSWER }),
    event({ idx: 1, kind: EventKind.LLM_END }),
  ];
  assert.deepEqual(fold(transcript, [...redone, END]), Array(5).fill(false));
  assert.equal(transcript.text(), "Hellofinal");
  assert.deepEqual([transcript.attempt, transcript.ended, transcript.error], [2, true, undefined]);
  const [node0, node1] = transcript.nodes;
  const none = { toolName: undefined, toolCallId: undefined, args: undefined, outcome: ToolOutcome.UNSPECIFIED };
  assert.deepEqual(node0?.parts, [
    { ...none, partKind: PartKind.TEXT, partKindName: "text", eventIdx: 0, content: "Hello" },
    {
      ...none,
      partKind: PartKind.TOOL_CALL,
      partKindName: "tool-call",
      eventIdx: 1,
      content: "",
      toolName: "count_words",
      toolCallId: "call-1",
      args: { text: "a b" },
    },
    {
      ...none,
      partKind: PartKind.TOOL_RETURN,
      partKindName: "tool-return",
      eventIdx: undefined,
      content: "2",
      toolName: "count_words",
      toolCallId: "call-1",
    },
  ]);
  assert.deepEqual(node1?.parts.map((p) => [p.eventIdx, p.content]), [[0, "final"]]);
});

test("a resume from node 0 drops everything", () => {
  const transcript = new Transcript();
  fold(transcript, [BEGIN, ...NODE_0, ...NODE_1_PARTIAL]);
  assert.equal(transcript.apply(resumed(0, 2)), true);
  assert.deepEqual([transcript.nodes, transcript.text(), transcript.attempt], [[], "", 2]);
});

test("a resume that supersedes nothing returns false", () => {
  const transcript = new Transcript();
  fold(transcript, [BEGIN, ...NODE_0]);
  assert.equal(transcript.apply(resumed(1, 2)), false);
  assert.deepEqual([transcript.text(), transcript.attempt], ["Hello", 2]);
  assert.equal(new Transcript().apply(resumed(0, 3)), false);
});

test("a delta of a part never seen is ignored", () => {
  const transcript = new Transcript(); // a listener that resumed after a cursor: the part's start came before it
  assert.equal(transcript.apply(delta(0, 0, "lo")), false);
  assert.equal(transcript.apply(delta(2, 5, "lo")), false);
  assert.deepEqual([transcript.nodes, transcript.text()], [[], ""]);
  fold(transcript, [nodeBegin(0), delta(0, 3, "x")]);
  assert.deepEqual(transcript.nodes, [{ idx: 0, parts: [] }]);
});

test("parts follow eventIdx, and a part sent again replaces it", () => {
  const transcript = new Transcript();
  fold(transcript, [nodeBegin(0), text(0, 1, "second"), text(0, 0, "first "), delta(0, 1, "!")]);
  assert.equal(transcript.text(), "first second!");
  transcript.apply(text(0, 1, "again"));
  assert.equal(transcript.text(), "first again");
});

test("tool returns come after the response parts, in arrival order, with their outcome", () => {
  const transcript = new Transcript();
  const retried = event({
    idx: 0,
    kind: EventKind.PART_START,
    partKind: PartKind.TOOL_RETURN,
    partKindName: "tool-return",
    content: "no such city",
    outcome: ToolOutcome.RETRIED,
  });
  const prompt = event({ idx: 0, kind: EventKind.PART_START, partKind: PartKind.OTHER, partKindName: "retry-prompt" });
  fold(transcript, [nodeBegin(0), retried, prompt, text(0, 0, "late")]);
  assert.deepEqual(
    transcript.nodes[0]?.parts.map((p) => [p.partKindName, p.eventIdx, p.outcome]),
    [
      ["text", 0, ToolOutcome.UNSPECIFIED],
      ["tool-return", undefined, ToolOutcome.RETRIED],
      ["retry-prompt", undefined, ToolOutcome.UNSPECIFIED],
    ],
  );
});

test("error, end, begin and custom events touch no node", () => {
  const transcript = new Transcript();
  fold(transcript, [nodeBegin(0), text(0, 0, "Hi")]);
  const custom = runtime(EventType.CUSTOM, "progress", '{"pct": 50}', "developer");
  const error = runtime(EventType.ERROR, "error", '{"msg": "canceled"}');
  assert.deepEqual(fold(transcript, [BEGIN, custom, error, END]), [false, false, false, false]);
  assert.deepEqual(
    [transcript.text(), transcript.error, transcript.ended, transcript.attempt],
    ["Hi", { msg: "canceled" }, true, 1],
  );
});
