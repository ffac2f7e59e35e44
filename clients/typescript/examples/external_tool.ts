/**
 * A service that implements an external tool of a hosted agent: it follows a session, runs the tool when the run
 * asks for it, and answers; the run goes on on the server. Run against `clients/with_server.py` (agent `oncall`):
 *   PAIS_ADDRESS=localhost:50051 node dist/examples/external_tool.js
 */
import { pathToFileURL } from "node:url";

import type { JsonObject, JsonValue } from "@bufbuild/protobuf";

import {
  DeferredCallKind,
  EventType,
  PartKind,
  StreamClient,
  externalResult,
  inputCalls,
  retry,
} from "../src/index.js";

/** The tools this service runs for the agent, by name. */
export type Tools = Record<string, (args: JsonObject) => Promise<JsonValue>>;

/** Follows the session's run to `end`, answering each external call with its tool's result; returns the text. */
export async function serveTools(
  client: StreamClient,
  sessionId: string,
  runId: string,
  tools: Tools,
): Promise<string> {
  let text = "";
  for await (const event of client.listen(sessionId)) {
    const calls = inputCalls(event).filter((call) => call.kind !== DeferredCallKind.APPROVAL);
    if (calls.length > 0) {
      const answers = await Promise.all(
        calls.map(async (call) => {
          const tool = tools[call.toolName];
          if (tool === undefined) return retry(call.toolCallId, `no tool ${call.toolName} here`);
          try {
            return externalResult(call.toolCallId, await tool(call.args));
          } catch (error) {
            return retry(call.toolCallId, String(error)); // the model sees the failure and may try again
          }
        }),
      );
      await client.respond(sessionId, runId, answers); // the run goes on; this listen sees the rest
    }
    if (event.partKind === PartKind.TEXT) text += event.content ?? event.contentDelta ?? "";
    if (event.type === EventType.ERROR) throw new Error(`run failed: ${event.bodyJson}`);
  }
  return text;
}

/** Pages whoever is on call (here: says who would be paged). */
async function page(args: JsonObject): Promise<JsonValue> {
  return { paged: "alice", about: args.msg ?? "" };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const baseUrl = `http://${process.env.PAIS_ADDRESS ?? "localhost:50051"}`;
  const client = new StreamClient({ baseUrl, token: process.env.PAIS_TOKEN });
  const sessionId = `ts-oncall-${Date.now()}`;
  const { runId } = await client.run("oncall", sessionId, "the db is down");
  console.log(await serveTools(client, sessionId, runId, { page }));
}
