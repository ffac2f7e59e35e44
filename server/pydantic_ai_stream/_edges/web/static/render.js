// Messages to DOM. A message's element is updated in place as its parts grow (a reader's open "Thinking" stays
// open while text streams). Text is set as text, never as HTML.

import { isTool, toolName } from "./message.js";

/** An element: `h("p", {class: "x"}, "text", child)`; `on<event>` attributes add listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  el.append(...children.filter((c) => c !== null && c !== undefined));
  return el;
}

const show = (value) => (typeof value === "string" ? value : JSON.stringify(value, null, 2));

const STATES = {
  "input-streaming": "calling…",
  "input-available": "called",
  "approval-requested": "needs approval",
  "approval-responded": "answered",
  "output-available": "done",
  "output-error": "failed",
  "output-denied": "denied",
};

/** A new element for a message (update it with `updateMessage`). */
export function messageElement(message) {
  const label = message.role === "user" ? "You" : "Agent";
  const el = h("article", { class: `message ${message.role}`, "data-role": message.role, "aria-label": label });
  el.append(h("div", { class: "who", "aria-hidden": "true" }, label), h("div", { class: "parts" }));
  el.rendered = [];
  return el;
}

/**
 * Bring `el` up to date with `message`. `answers` (or null): `{approve(part, approved), output(part, value)}`,
 * given when the message's open calls can be answered now.
 */
export function updateMessage(el, message, answers) {
  const parts = el.querySelector(".parts");
  message.parts.forEach((part, i) => {
    let rendered = el.rendered[i];
    if (!rendered || rendered.type !== part.type) {
      const fresh = partElement(part);
      if (rendered) parts.replaceChild(fresh.el, rendered.el);
      else parts.append(fresh.el);
      el.rendered[i] = rendered = fresh;
    }
    rendered.update(part, answers);
  });
  el.querySelector(".error")?.remove();
  if (message.error) parts.append(h("p", { class: "error", role: "alert" }, message.error));
  el.dataset.end = message.end ?? "";
}

function partElement(part) {
  if (part.type === "text") {
    const el = h("div", { class: "text", "data-part": "text" });
    return { type: part.type, el, update: (p) => el.textContent !== p.text && (el.textContent = p.text) };
  }
  if (part.type === "reasoning") {
    const body = h("div", { class: "reasoning-text" });
    const el = h("details", { class: "thinking", "data-part": "reasoning" }, h("summary", {}, "Thinking"), body);
    return { type: part.type, el, update: (p) => body.textContent !== p.text && (body.textContent = p.text) };
  }
  if (isTool(part)) return toolElement(part);
  if (part.type === "file" || part.type === "source-url") {
    const label = part.filename || part.title || (part.url.startsWith("data:") ? part.mediaType : part.url);
    const el = h("a", { class: "link", href: part.url, target: "_blank", rel: "noopener" }, label);
    return { type: part.type, el, update: () => {} };
  }
  return { type: part.type, el: h("span", { hidden: true }), update: () => {} }; // step-start, data-*: nothing
}

function toolElement(part) {
  const name = toolName(part);
  const badge = h("span", { class: "badge" });
  const body = h("div", { class: "tool-body" });
  const el = h(
    "details",
    { class: "tool", "data-part": "tool", "data-tool": name, open: true },
    h("summary", {}, h("span", { class: "tool-icon", "aria-hidden": "true" }, "⚙"), h("code", {}, name), badge),
    body,
  );
  let shown = "";
  const update = (p, answers) => {
    const key = JSON.stringify([p.state, p.input, p.output, p.errorText, p.approval, Boolean(answers)]);
    if (key === shown) return;
    shown = key;
    el.dataset.state = p.state;
    badge.textContent = STATES[p.state] ?? p.state;
    body.replaceChildren(...toolBody(p, answers));
  };
  return { type: part.type, el, update };
}

function toolBody(part, answers) {
  const rows = [h("div", { class: "field" }, h("span", { class: "label" }, "Arguments"), h("pre", {}, show(part.input ?? "")))];
  if (part.state === "output-available") {
    rows.push(h("div", { class: "field" }, h("span", { class: "label" }, "Result"), h("pre", {}, show(part.output))));
  }
  if (part.errorText) rows.push(h("p", { class: "error" }, part.errorText));
  if (part.state === "approval-responded") {
    rows.push(h("p", { class: "note" }, part.approval?.approved ? "Approved, sending…" : "Denied, sending…"));
  }
  if (answers && part.state === "approval-requested") {
    rows.push(
      h(
        "div",
        { class: "actions", role: "group", "aria-label": `Approve ${toolName(part)}?` },
        h("button", { type: "button", class: "approve", onclick: () => answers.approve(part, true) }, "Approve"),
        h("button", { type: "button", class: "deny", onclick: () => answers.approve(part, false) }, "Deny"),
      ),
    );
  }
  if (answers && part.state === "input-available") rows.push(outputForm(part, answers));
  return rows;
}

function outputForm(part, answers) {
  const id = `output-${part.toolCallId}`;
  const field = h("textarea", { id, rows: 2, placeholder: "the tool's result (JSON or text)" });
  const submit = (event) => {
    event.preventDefault();
    let value = field.value;
    try {
      value = JSON.parse(value);
    } catch {
      // plain text is a result too
    }
    answers.output(part, value);
  };
  return h(
    "form",
    { class: "tool-output", onsubmit: submit },
    h("label", { for: id }, `Result of ${toolName(part)} (run elsewhere)`),
    field,
    h("button", { type: "submit" }, "Send result"),
  );
}
