// The AI SDK's own client side of the Vercel AI endpoint: `DefaultChatTransport` (what `useChat` uses) sends and
// reconnects, parsing and validating every chunk with the SDK's schema; `readUIMessageStream` builds the messages.
// Usage: node conformance.mjs <base url> <token>; prints what it saw as JSON for tests/e2e/test_web_node.py.
import { DefaultChatTransport, parseJsonEventStream, readUIMessageStream, uiMessageChunkSchema } from "ai";

const [base, token] = process.argv.slice(2);
const transport = (agent) =>
  new DefaultChatTransport({ api: `${base}/v1/agents/${agent}/vercel-ai/chat`, headers: { authorization: `Bearer ${token}` } });

async function last(stream, message) {
  let snapshot;
  for await (const m of readUIMessageStream({ stream, message, onError: (e) => { throw e; } })) snapshot = m;
  return structuredClone(snapshot);
}

const send = (agent, chatId, messages) =>
  transport(agent).sendMessages({ chatId, messages, trigger: "submit-message", messageId: undefined, abortSignal: undefined });

const user = { id: "u1", role: "user", parts: [{ type: "text", text: "count to forty" }] };
const streamed = await last(await send("paced", "node-paced", [user]));
const reconnected = await last(await transport("paced").reconnectToStream({ chatId: "node-paced" }));

const ask = { id: "u2", role: "user", parts: [{ type: "text", text: "drop staging" }] };
const waiting = await last(await send("ops", "node-ops", [ask]));
const answered = structuredClone(waiting);
for (const part of answered.parts) {
  if (part.type === "tool-drop_db") Object.assign(part, { state: "approval-responded", approval: { ...part.approval, approved: true } });
  if (part.type === "tool-page") Object.assign(part, { state: "output-available", output: "paged" });
}
const continued = await last(await send("ops", "node-ops", [ask, answered]), answered);

// A connection dropped mid-run and resumed after its last SSE id: the bytes of both, as one stream, parse and build
// the same message (no chunk lost or repeated, every one valid in its place).
const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
const chat = { id: "node-cut", trigger: "submit-message", messages: [user] };
const first = await fetch(`${base}/v1/agents/paced/vercel-ai/chat`, { method: "POST", headers, body: JSON.stringify(chat) });
const reader = first.body.getReader();
let head = "";
while ((head.match(/\n\n/g) || []).length < 12) head += new TextDecoder().decode((await reader.read()).value);
await reader.cancel();
head = head.slice(0, head.lastIndexOf("\n\n") + 2);
const lastId = [...head.matchAll(/^id: (.*)$/gm)].at(-1)[1];
const resumeUrl = `${base}/v1/agents/paced/vercel-ai/chat/node-cut/stream`;
const tail = await (await fetch(resumeUrl, { headers: { ...headers, "last-event-id": lastId } })).text();
const chunks = parseJsonEventStream({ stream: new Response(head + tail).body, schema: uiMessageChunkSchema }).pipeThrough(
  new TransformStream({ transform(result, controller) { if (!result.success) throw result.error; controller.enqueue(result.value); } }),
);
const resumed = await last(chunks);

console.log(JSON.stringify({ streamed, reconnected, waiting, continued, resumed }));
