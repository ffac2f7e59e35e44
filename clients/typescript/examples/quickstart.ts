import { EventType, PartKind, StreamClient, eventBody } from "../src/index.js";

/** Run an agent and collect its answer as it streams; tool calls and errors are reported as they happen. */
export async function quickstart(baseUrl: string, token: string, agent: string, prompt: string): Promise<string> {
  const client = new StreamClient({ baseUrl, token });
  const sessionId = `ts-${Date.now()}`;
  await client.run(agent, sessionId, prompt);
  let answer = "";
  for await (const event of client.listen(sessionId)) {
    if (event.partKind === PartKind.TEXT) answer += event.content ?? event.contentDelta ?? "";
    if (event.partKind === PartKind.TOOL_CALL) console.log(`[tool] ${event.toolName}(${JSON.stringify(event.args)})`);
    if (event.type === EventType.ERROR) throw new Error(String(eventBody(event).msg));
  }
  return answer;
}
