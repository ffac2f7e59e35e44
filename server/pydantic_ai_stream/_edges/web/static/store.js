// What the page keeps in the browser: the token and the sessions it opened (localStorage, across tabs), and the
// run a tab is rendering with its last cursor (sessionStorage: the tab's own, kept across a reload).

const TOKEN = "pydantic-ai-stream.token";
const SESSIONS = "pydantic-ai-stream.sessions";
const LIVE = "pydantic-ai-stream.live.";
const KEPT_SESSIONS = 50;

function read(storage, key, fallback) {
  try {
    return JSON.parse(storage.getItem(key)) ?? fallback;
  } catch {
    return fallback;
  }
}

export const token = {
  get: () => localStorage.getItem(TOKEN) ?? "",
  set: (value) => (value ? localStorage.setItem(TOKEN, value) : localStorage.removeItem(TOKEN)),
};

/** Sessions this browser opened, newest first: `[{id, agent, title, at}]`. */
export const sessions = {
  list: () => read(localStorage, SESSIONS, []),
  remember(id, agent, title) {
    const known = sessions.list();
    const old = known.find((s) => s.id === id && s.agent === agent);
    const entry = { id, agent, title: old?.title || title || id, at: Date.now() };
    const rest = known.filter((s) => s !== old);
    localStorage.setItem(SESSIONS, JSON.stringify([entry, ...rest].slice(0, KEPT_SESSIONS)));
  },
};

/**
 * The run this tab renders on a session: `{cursor, message, user, continues}`, saved with every chunk, so that
 * the message and the cursor after which the stream goes on always agree.
 */
export const live = {
  get: (agent, session) => read(sessionStorage, `${LIVE}${agent}/${session}`, null),
  set: (agent, session, state) => sessionStorage.setItem(`${LIVE}${agent}/${session}`, JSON.stringify(state)),
  clear: (agent, session) => sessionStorage.removeItem(`${LIVE}${agent}/${session}`),
};
