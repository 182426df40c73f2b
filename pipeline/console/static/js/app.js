// The console's shell: which page, who is signed in, the staff case, the room's tabs; then the page.
// Every page is a module in pages/ exporting render(ctx); data comes only from the query API.

import { api, ApiError, setCsrfToken } from "./api.js";
import { h, ident, replace, roomLink, setTitle, status } from "./dom.js";

const ROUTES = [
  [/^\/console\/?$/, "rooms"],
  [/^\/console\/sign-in$/, "signin"],
  [/^\/console\/rooms\/([^/]+)\/?$/, "calendar"],
  [/^\/console\/rooms\/([^/]+)\/day\/(\d{4}-\d{2}-\d{2})$/, "day"],
  [/^\/console\/rooms\/([^/]+)\/events\/([0-9a-fA-F-]{36})$/, "event"],
  [/^\/console\/rooms\/([^/]+)\/live$/, "live"],
  [/^\/console\/rooms\/([^/]+)\/insights$/, "insights"],
  [/^\/console\/rooms\/([^/]+)\/transparency$/, "transparency"],
  [/^\/console\/rooms\/([^/]+)\/users\/([^/]+)$/, "user"],
  [/^\/console\/rooms\/([^/]+)\/alerts$/, "alerts"],
];
const TABS = [
  ["calendar", "Calendar", ""],
  ["day", "Day", "day"],
  ["live", "Live", "live"],
  ["alerts", "Alerts", "alerts"],
  ["insights", "Insights", "insights"],
  ["transparency", "Transparency", "transparency"],
];

function match(path) {
  for (const [pattern, page] of ROUTES) {
    const m = pattern.exec(path);
    if (m) return { page, args: m.slice(1).map(decodeURIComponent) };
  }
  return null;
}

export function signInUrl() {
  // the #fragment too: a permanent link to an event in a day (#e-<id>) survives signing in
  return "/console/sign-in?next=" + encodeURIComponent(location.pathname + location.search + location.hash);
}

function account(session) {
  const nav = document.getElementById("account");
  const signOut = h("button", { type: "button", class: "link" }, "Sign out");
  signOut.addEventListener("click", async () => {
    let next = "/console/sign-in?signed_out=1";
    try {
      const answer = await api("/v1/session", { method: "DELETE" });
      // a single sign-on session: the provider ends its session too, then sends the browser back here
      const end = answer && answer.end_session_url;
      if (typeof end === "string" && /^https?:\/\//.test(end)) next = end;
    } finally {
      location.assign(next);
    }
  });
  replace(nav, h("span", { class: "who" }, "Signed in as ", h("strong", null, ident(session.subject)),
    session.kind === "staff" ? " (support staff)" : ""), " ", signOut);
}

function caseBanner(session) {
  const banner = document.getElementById("case");
  if (session.kind !== "staff") return;
  banner.hidden = false;
  if (session.staff_reason) {
    replace(banner, "Case ", h("strong", { id: "case-id" }, ident(session.staff_reason)),
      ": every read you make is recorded with it. ", h("a", { href: "/console/#case-form" }, "Change case"));
  } else {
    replace(banner, "State a ticket or case id before opening a room: ", h("a", { href: "/console/#case-form" }, "state a case"));
  }
}

function roomHeader(room, page, day) {
  return h("header", { class: "room" },
    h("h1", null, h("span", { class: "muted" }, "Room "), ident(room)),
    h("nav", { "aria-label": "Room pages", class: "tabs" },
      h("ul", null, TABS.map(([name, label, sub]) => {
        const href = name === "day" ? roomLink(room, "day", day) : sub ? roomLink(room, sub) : roomLink(room) + "/";
        return h("li", null, h("a", { href, "aria-current": name === page ? "page" : null }, label));
      }))));
}

export function explain(error) {
  if (!(error instanceof ApiError)) return status(`Something went wrong: ${error.message}`, "error");
  if (error.status === 403 && error.code === "reason_required") {
    return h("div", { role: "alert", class: "status error" },
      "Support staff must state a ticket or case id first. ", h("a", { href: "/console/#case-form" }, "State a case"));
  }
  if (error.status === 403) {
    return status("You do not have access to this room, or it does not exist.", "error");
  }
  if (error.status === 404) return status("Not found.", "error");
  return status(`${error.message} (${error.code}${error.requestId ? `, request ${error.requestId}` : ""})`, "error");
}

async function main() {
  const main = document.getElementById("main");
  const route = match(location.pathname);
  if (!route) {
    setTitle("Not found");
    replace(main, h("h1", null, "Page not found"), h("p", null, h("a", { href: "/console/" }, "Your rooms")));
    return;
  }
  const module = await import(`./pages/${route.page}.js`);
  let session = null;
  if (route.page !== "signin") {
    try {
      session = await api("/v1/session");
    } catch (error) {
      if (error instanceof ApiError && error.status === 401) {
        location.replace(signInUrl());
        return;
      }
      replace(main, explain(error));
      return;
    }
    setCsrfToken(session.csrf_token);
    account(session);
    caseBanner(session);
  }
  const room = route.args[0];
  const ctx = {
    main,
    session,
    room,
    args: route.args,
    query: new URLSearchParams(location.search),
  };
  const body = h("div", { class: "page" });
  if (room !== undefined && route.page !== "signin" && route.page !== "rooms") {
    const day = route.page === "day" ? route.args[1] : new Date().toISOString().slice(0, 10);
    replace(main, roomHeader(room, route.page, day), body);
  } else {
    replace(main, body);
  }
  ctx.body = body;
  try {
    await module.render(ctx);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      location.replace(signInUrl());
      return;
    }
    replace(body, explain(error));
  }
  main.setAttribute("aria-busy", "false");
  document.body.dataset.ready = "true";
}

main();
