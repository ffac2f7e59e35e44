// An assistant message built from the Vercel AI UI message stream's chunks, in the AI SDK's `UIMessage` shape
// (the shape the server reads back when the page answers approvals): `{id, role, parts}`. What the stream needs
// beside the parts (open text blocks, a tool call's input text so far) is kept in `open`, never sent.

/** A new, empty assistant message. */
export function assistantMessage(id = "") {
  return { id, role: "assistant", parts: [], open: { text: {}, reasoning: {}, input: {} }, end: null };
}

/** A user message of `text`, and `files` (`[{mediaType, filename, url}]`, a data URL each) for the model. */
export function userMessage(id, text, files = []) {
  return { id, role: "user", parts: [{ type: "text", text }, ...files.map((f) => ({ type: "file", ...f }))] };
}

/** The message as the chat request sends it: the `UIMessage` fields only. */
export function wireMessage(message) {
  return { id: message.id, role: message.role, parts: message.parts };
}

/** Whether a part is a tool call (`tool-<name>` or `dynamic-tool`). */
export function isTool(part) {
  return part.type.startsWith("tool-") || part.type === "dynamic-tool";
}

/** A tool part's tool name. */
export function toolName(part) {
  return part.type === "dynamic-tool" ? part.toolName : part.type.slice("tool-".length);
}

const calls = (message, states) =>
  message?.role === "assistant" ? message.parts.filter((p) => isTool(p) && states.includes(p.state)) : [];

/** The tool calls of `message` a waiting run asks about: approvals, and calls another party must answer. */
export function pendingCalls(message) {
  return calls(message, ["approval-requested", "input-available"]);
}

/** The tool calls of `message` with no result yet, answered or not: the run goes on from them. */
export function openCalls(message) {
  return calls(message, ["input-streaming", "input-available", "approval-requested", "approval-responded"]);
}

const tools = (message, id) => message.parts.find((p) => isTool(p) && p.toolCallId === id);

function toolPart(message, chunk) {
  let part = tools(message, chunk.toolCallId);
  if (!part) {
    part = chunk.dynamic
      ? { type: "dynamic-tool", toolName: chunk.toolName, toolCallId: chunk.toolCallId }
      : { type: `tool-${chunk.toolName}`, toolCallId: chunk.toolCallId };
    part.state = "input-streaming";
    part.input = undefined;
    message.parts.push(part);
  }
  return part;
}

function startBlock(message, kind, id) {
  // As the AI SDK builds them: a reasoning part keeps its block's id, a text part does not.
  message.parts.push(kind === "reasoning" ? { type: kind, id, text: "", state: "streaming" } : { type: kind, text: "", state: "streaming" });
  message.open[kind][id] = message.parts.length - 1;
}

function block(message, kind, id) {
  const index = message.open[kind][id];
  if (index === undefined) throw new Error(`${kind} block ${id} was never started`);
  return message.parts[index];
}

/** Apply one chunk to `message` (in place). Unknown chunk types are ignored, as the AI SDK's reader does. */
export function applyChunk(message, chunk) {
  switch (chunk.type) {
    case "start":
      if (chunk.messageId && !message.id) message.id = chunk.messageId;
      break;
    case "text-start":
    case "reasoning-start":
      startBlock(message, chunk.type.split("-")[0], chunk.id);
      break;
    case "text-delta":
    case "reasoning-delta":
      block(message, chunk.type.split("-")[0], chunk.id).text += chunk.delta;
      break;
    case "text-end":
    case "reasoning-end": {
      const kind = chunk.type.split("-")[0];
      block(message, kind, chunk.id).state = "done";
      delete message.open[kind][chunk.id];
      break;
    }
    case "tool-input-start":
      toolPart(message, chunk);
      message.open.input[chunk.toolCallId] = "";
      break;
    case "tool-input-delta": {
      const part = toolPart(message, chunk);
      const text = (message.open.input[chunk.toolCallId] ?? "") + chunk.inputTextDelta;
      message.open.input[chunk.toolCallId] = text;
      part.input = text;
      break;
    }
    case "tool-input-available":
    case "tool-input-error": {
      const part = toolPart(message, chunk);
      part.input = chunk.input;
      part.state = chunk.type === "tool-input-error" ? "output-error" : "input-available";
      if (chunk.errorText) part.errorText = chunk.errorText;
      delete message.open.input[chunk.toolCallId];
      break;
    }
    case "tool-approval-request":
      Object.assign(toolPart(message, chunk), { state: "approval-requested", approval: { id: chunk.approvalId } });
      break;
    case "tool-output-available":
      Object.assign(toolPart(message, chunk), { state: "output-available", output: chunk.output });
      break;
    case "tool-output-error":
      Object.assign(toolPart(message, chunk), { state: "output-error", errorText: chunk.errorText });
      break;
    case "tool-output-denied":
      toolPart(message, chunk).state = "output-denied";
      break;
    case "start-step":
      message.parts.push({ type: "step-start" });
      break;
    case "file":
      message.parts.push({ type: "file", url: chunk.url, mediaType: chunk.mediaType });
      break;
    case "source-url":
      message.parts.push({ type: "source-url", sourceId: chunk.sourceId, url: chunk.url, title: chunk.title });
      break;
    case "error":
      message.error = chunk.errorText;
      break;
    case "abort":
      message.end = "aborted";
      break;
    case "finish":
      message.end ??= chunk.finishReason || "finished";
      break;
    default:
      break; // finish-step, message-metadata, data-*: nothing to show
  }
  return message;
}
