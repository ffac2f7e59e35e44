// The chat page's message model (`applyChunk` in the page's message.js) against the AI SDK's own
// (`readUIMessageStream`): the same chunks, from the server's chat endpoint and checked by the SDK's schema, must
// build the same parts, also for a waiting run answered and continued in the same message.
// Usage: node page_model.mjs <base url> <token>; prints `{name: {page, sdk}}` as JSON for tests/e2e/test_chat_page.py.
import { parseJsonEventStream, readUIMessageStream, uiMessageChunkSchema } from "ai";
import { applyChunk, assistantMessage, wireMessage } from "../../server/pydantic_ai_stream/_edges/web/static/message.js";

const [base, token] = process.argv.slice(2);
const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };

/** The chunks of the response to a chat request, each valid by the SDK's schema. */
async function chunks(agent, id, messages) {
  const body = JSON.stringify({ id, trigger: "submit-message", messages });
  const response = await fetch(`${base}/v1/agents/${agent}/vercel-ai/chat`, { method: "POST", headers, body });
  if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
  const parsed = [];
  const results = parseJsonEventStream({ stream: response.body, schema: uiMessageChunkSchema });
  for await (const result of results) {
    if (!result.success) throw result.error;
    parsed.push(result.value);
  }
  return parsed;
}

async function sdk(parsed, message) {
  const stream = new ReadableStream({
    start(controller) {
      parsed.forEach((chunk) => controller.enqueue(chunk));
      controller.close();
    },
  });
  let last;
  for await (const m of readUIMessageStream({ stream, message, onError: (e) => { throw e; } })) last = m;
  return structuredClone(last);
}

function page(parsed, message = assistantMessage()) {
  parsed.forEach((chunk) => applyChunk(message, chunk));
  return wireMessage(structuredClone(message));
}

const user = (text) => ({ id: `u-${text}`, role: "user", parts: [{ type: "text", text }] });
const seen = {};
for (const agent of ["demo", "slow"]) {
  const parsed = await chunks(agent, `model-${agent}-${Date.now()}`, [user("count the words in this sentence")]);
  seen[agent] = { page: page(parsed), sdk: await sdk(parsed) };
}

// A waiting run, answered as the page answers it, and its continuation into the same message.
const session = `model-deployer-${Date.now()}`;
const ask = user("deploy it");
const first = await chunks("deployer", session, [ask]);
const byPage = assistantMessage();
page(first, byPage);
const bySdk = await sdk(first);
seen.waiting = { page: wireMessage(structuredClone(byPage)), sdk: structuredClone(bySdk) };
for (const message of [byPage, bySdk]) {
  for (const part of message.parts) {
    if (part.state === "approval-requested") Object.assign(part, { state: "approval-responded", approval: { id: part.approval.id, approved: true } });
  }
}
const answered = structuredClone(bySdk);
const rest = await chunks("deployer", session, [ask, answered]);
seen.continued = { page: page(rest, byPage), sdk: await sdk(rest, answered) };

console.log(JSON.stringify(seen));
