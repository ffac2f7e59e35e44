/**
 * The server the tests talk to: a real pydantic-ai-stream server (the Python one) and a real Redis,
 * started by `clients/with_server.py`, which `npm test` runs the tests under.
 */
import { once } from "node:events";
import { connect, createServer, type Socket } from "node:net";

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
