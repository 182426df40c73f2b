// Sign in: with single sign-on configured, "Sign in with <provider>" (the API runs the OpenID Connect flow
// and comes back with a session cookie); otherwise, and for development, a token from the identity
// provider (in the link's #fragment, which never reaches a server log, or pasted) is exchanged for a
// session cookie the page itself cannot read. After signing out (?signed_out=1) the page says so and
// offers to end the provider's session too, where the provider supports it.

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

async function singleSignOn(query) {
  try {
    const sso = await api("/v1/session/oidc");
    return sso && sso.enabled ? sso : null;
  } catch {
    return null;  // the token form still works
  }
}

function ssoPanel(sso, query) {
  const start = `${sso.start_url}?next=${encodeURIComponent(nextPage(query))}`;
  const panel = h("div", { class: "card" },
    h("a", { class: "button", href: start }, `Sign in with ${sso.provider}`));
  if (query.get("signed_out") === "1" && sso.end_session_url) {
    panel.append(h("p", null, h("a", { href: sso.end_session_url }, `Also sign out of ${sso.provider}`)));
  }
  return panel;
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
  const sso = token ? null : await singleSignOn(query);
  const notice = query.get("signed_out") === "1" ? h("p", { role: "status" }, "You have signed out.")
    : query.get("signed_out") === "provider" ? h("p", { role: "status" }, "You have signed out of the console and your identity provider.")
    : null;
  const tokenForm = sso ? h("details", null, h("summary", null, "Sign in with a token instead"), form) : form;
  replace(body, h("h1", null, "Sign in to the room console"),
    h("p", null, "Room owners, moderators and support staff read their rooms' logs here. Every read is recorded."),
    ...(notice ? [notice] : []), out, ...(sso ? [ssoPanel(sso, query)] : []), tokenForm);
  if (token) await exchange(token, query, out);
}
