/**
 * The server the tests talk to: a real pydantic-ai-stream server (the Python one) and a real Redis,
 * started by `clients/with_server.py`, which `npm test` runs the tests under.
 */
import { once } from "node:events";
import { createServer as createHttp2Server, type ServerHttp2Session } from "node:http2";
import { connect, createServer, type Socket } from "node:net";

import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import { AgentStreamService } from "../src/index.js";

function required(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with \`npm test\` (clients/with_server.py)`);
  return value;
}

/** The server's base URL, and tokens of two different users. */
export const SERVER = `http://${required("PAIS_ADDRESS")}`;
export const TOKENS = { alice: required("PAIS_TOKEN"), bob: required("PAIS_OTHER_TOKEN") };

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

/**
 * A gRPC server in front of the real one that forwards Listen, but closes it OK after
 * `eventsPerCall` events, `end` or not, as an older server's timeout or a proxy may (a batch
 * is cut short to what is left); with `refusesBatches`, it refuses `maxBatchEvents` as a server
 * older than that field does.
 */
export interface Front {
  baseUrl: string;
  /** Listen calls it took so far. */
  readonly calls: number;
  /** The `maxBatchEvents` of each Listen call, in order. */
  readonly asked: readonly number[];
  /** Responses with an `events` payload (a batch) it forwarded so far. */
  readonly batches: number;
  /** Resolves once no Listen call is open (its client ended it, or it closed). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

export async function startFront(
  target: string,
  token: string,
  eventsPerCall = Infinity,
  { refusesBatches = false } = {},
): Promise<Front> {
  const connection = new Http2SessionManager(target); // its own, so that `close` can end it
  const authorization = `Bearer ${token}`;
  const upstream = createClient(
    AgentStreamService,
    createGrpcTransport({
      baseUrl: target,
      sessionManager: connection,
      interceptors: [
        (next) => async (request) => {
          request.header.set("authorization", authorization);
          return await next(request);
        },
      ],
    }),
  );
  let calls = 0;
  let batches = 0;
  const asked: number[] = [];
  let open = 0;
  const idle: Array<() => void> = [];
  const handler = connectNodeAdapter({
    routes: (router) =>
      router.service(AgentStreamService, {
        async *listen(request, context) {
          calls += 1;
          asked.push(request.maxBatchEvents);
          if (refusesBatches && request.maxBatchEvents > 0) {
            throw new ConnectError("request has fields this server does not know", Code.InvalidArgument);
          }
          open += 1;
          const forward = new AbortController(); // ends the upstream call when this one ends, however
          context.signal.addEventListener("abort", () => forward.abort());
          try {
            let sent = 0;
            for await (const response of upstream.listen(request, { signal: forward.signal })) {
              if (sent === eventsPerCall) return;
              const { payload } = response;
              if (payload.case === "events") {
                payload.value.events = payload.value.events.slice(0, eventsPerCall - sent);
                sent += payload.value.events.length;
                batches += 1;
              } else if (payload.case === "event") {
                sent += 1;
              }
              yield response;
            }
          } finally {
            forward.abort();
            open -= 1;
            if (open === 0) for (const resolve of idle.splice(0)) resolve();
          }
        },
      }),
  });
  const server = createHttp2Server(handler);
  const sessions = new Set<ServerHttp2Session>();
  server.on("session", (session: ServerHttp2Session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  if (address === null || typeof address === "string") throw new Error("no port");
  return {
    baseUrl: `http://127.0.0.1:${address.port}`,
    get calls() {
      return calls;
    },
    asked,
    get batches() {
      return batches;
    },
    idle: () => (open === 0 ? Promise.resolve() : new Promise((resolve) => idle.push(resolve))),
    async close() {
      server.close();
      for (const session of sessions) session.destroy(); // the client keeps its connection open
      connection.abort();
      await once(server, "close");
    },
  };
}
