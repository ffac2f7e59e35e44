// The server's HTTP routes the page uses (the web edge's contract), each with the caller's bearer token.

/** A refused request: `status` and the server's `{"error": ...}` message. */
export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

const path = (...names) => names.map(encodeURIComponent).join("/");

export class Api {
  /** `token()` gives the bearer token to send ("" for none). */
  constructor(token) {
    this.token = token;
  }

  headers(extra = {}) {
    const token = this.token();
    return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
  }

  async request(url, init = {}) {
    const response = await fetch(url, { ...init, headers: this.headers(init.headers) });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      try {
        message = (await response.json()).error ?? message;
      } catch {
        // not JSON: the status says it
      }
      throw new HttpError(response.status, message);
    }
    return response;
  }

  /** The agents this caller may run: `[{name}, ...]`. */
  async agents() {
    return (await (await this.request("/v1/agents")).json()).agents;
  }

  /** The session's stored conversation (`messages`) and `active`: the cursor to resume its live run from. */
  async history(agent, session) {
    const url = `/v1/agents/${path(agent, "sessions", session, "messages")}?format=vercel-ai`;
    return (await this.request(url)).json();
  }

  /** Start a run (or answer a waiting one): the response streams the run's chunks. */
  chat(agent, body, signal) {
    return this.request(`/v1/agents/${path(agent)}/vercel-ai/chat`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal,
    });
  }

  /** The session's run streamed after `cursor` (from its start when null); `null` when the session has no run. */
  async resume(agent, session, cursor, signal) {
    const headers = cursor ? { "Last-Event-ID": cursor } : {};
    const url = `/v1/agents/${path(agent)}/vercel-ai/chat/${path(session)}/stream`;
    const response = await this.request(url, { headers, signal });
    return response.status === 204 ? null : response;
  }

  /** Cancel the session's run (the Stop button). */
  async cancel(agent, session) {
    await this.request(`/v1/agents/${path(agent, "sessions", session, "cancel")}`, { method: "POST" });
  }
}
