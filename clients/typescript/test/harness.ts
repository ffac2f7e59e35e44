/** A real Redis and a real pydantic-ai-stream server (the Python one), started for the tests. */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { connect, createServer, type Socket } from "node:net";
import type { Readable } from "node:stream";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");

export const TOKENS = { alice: "alice-token", bob: "bob-token" };

export interface Harness {
  baseUrl: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  server.close();
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

/** Resolves with the first match of `pattern` in a line of `output` (rejects if the process exits first). */
function waitForLine(child: ChildProcess, output: Readable, pattern: RegExp, what: string): Promise<RegExpMatchArray> {
  return new Promise((resolvePromise, reject) => {
    const lines = createInterface({ input: output });
    const seen: string[] = [];
    const timer = setTimeout(() => reject(new Error(`${what} did not start: ${seen.join("\n")}`)), 60_000);
    lines.on("line", (line) => {
      seen.push(line);
      const match = line.match(pattern);
      if (match) {
        clearTimeout(timer);
        lines.removeAllListeners("line");
        output.resume(); // keep draining
        resolvePromise(match);
      }
    });
    child.once("exit", (code) => reject(new Error(`${what} exited with ${code}: ${seen.join("\n")}`)));
  });
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  await exited;
}

export async function startHarness(): Promise<Harness> {
  const children: ChildProcess[] = [];
  let redisUrl = process.env.REDIS_URL;
  if (!redisUrl) {
    const port = await freePort();
    const redis = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", mkdtempSync(join(tmpdir(), "pais-"))],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    children.push(redis);
    await waitForLine(redis, redis.stdout!, /Ready to accept connections/, "redis-server");
    redisUrl = `redis://127.0.0.1:${port}/0`;
  }
  const python = process.env.PYTHON ?? join(repo, ".venv/bin/python");
  const server = spawn(
    python,
    [
      "-m", "pydantic_ai_stream", "serve", "--port", "0",
      "--agent", "stalling=grpc_agents:stalling",
      "--agent", "weather=grpc_agents:weather",
      "--token", `${TOKENS.alice}=1:1`,
      "--token", `${TOKENS.bob}=1:2`,
    ],
    {
      env: {
        ...process.env,
        REDIS_URL: redisUrl,
        PYDANTIC_AI_STREAM_REDIS_PREFIX: `ts${process.pid}`,
        PYTHONPATH: [join(repo, "tests/e2e"), join(repo, "tests"), process.env.PYTHONPATH ?? ""].join(":"),
      },
      stdio: ["ignore", "inherit", "pipe"],
    },
  );
  children.push(server);
  const match = await waitForLine(server, server.stderr!, /serving \S+ on \S+:(\d+) /, "pydantic-ai-stream serve");
  return {
    baseUrl: `http://127.0.0.1:${match[1]}`,
    async stop() {
      for (const child of children.reverse()) await stopProcess(child);
    },
  };
}

/** A TCP proxy in front of the server whose connections a test can cut, as a flaky network would. */
export interface Proxy {
  baseUrl: string;
  /** Connections accepted so far. */
  readonly accepted: number;
  /** Destroys every open connection (the proxy keeps accepting new ones). */
  cut(): void;
  close(): Promise<void>;
}

export async function startProxy(target: string): Promise<Proxy> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server = createServer((client) => {
    accepted += 1;
    const upstream = connect(Number(port), hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on("close", () => sockets.delete(socket));
      socket.on("error", () => undefined); // a cut connection errors on the other side
    }
    client.pipe(upstream).pipe(client);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  const cut = (): void => {
    for (const socket of sockets) socket.destroy();
  };
  return {
    baseUrl: `http://127.0.0.1:${address.port}`,
    get accepted() {
      return accepted;
    },
    cut,
    async close() {
      cut();
      server.close();
      await once(server, "close");
    },
  };
}
