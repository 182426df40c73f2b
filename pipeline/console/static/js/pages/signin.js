// Sign in: a token from the platform's identity provider (in the link's #fragment, which never reaches a
// server log, or pasted) is exchanged for a session cookie the page itself cannot read.

import { api } from "../api.js";
import { h, replace, setTitle, status } from "../dom.js";

function nextPage(query) {
  const next = query.get("next") || "";
  return next.startsWith("/console/") && !next.startsWith("//") ? next : "/console/";
}

async function exchange(token, query, out) {
  replace(out, status("Signing in…"));
  try {
    await api("/v1/session", { method: "POST", headers: { Authorization: `Bearer ${token.trim()}` } });
  } catch (error) {
    replace(out, status(`Sign-in refused: ${error.message}`, "error"));
    return;
  }
  location.replace(nextPage(query));
}

export async function render({ body, query }) {
  setTitle("Sign in");
  const fragment = new URLSearchParams(location.hash.slice(1));
  const token = fragment.get("token");
  if (token) history.replaceState(null, "", location.pathname + location.search);
  const out = h("div", { "aria-live": "polite" });
  const field = h("textarea", { id: "token", name: "token", rows: 4, required: true, autocomplete: "off", spellcheck: "false" });
  const form = h("form", { class: "card" },
    h("label", { for: "token" }, "Token from the identity provider"),
    field,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    exchange(field.value, query, out);
  });
  replace(body, h("h1", null, "Sign in to the room console"),
    h("p", null, "Room owners, moderators and support staff read their rooms' logs here. Every read is recorded."),
    out, form);
  if (token) await exchange(token, query, out);
}
