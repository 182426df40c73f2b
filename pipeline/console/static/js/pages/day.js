// A day (or a range of days) of a room: events in order, filtered by type, actor, target and chat text,
// paged with the API's signed cursor; each event links to its permanent page with its context.
// The export links ask the API for exactly this view (range, filters, order) as CSV or NDJSON; the
// evidence section shows each day's seal and downloads the evidence of a sealed day (the whole day, or the
// events in view with their inclusion proofs).

import { api, roomPath, withQuery } from "../api.js";
import { addDays, h, replace, roomLink, setTitle, status, todayUtc } from "../dom.js";
import { eventList, TYPES } from "../events.js";
import { evidenceButton, sealState } from "../seals.js";
import { zoneSwitch } from "../time.js";
import { alertBadge, alertsLink, sumAlerts } from "../alerts.js";

const PAGE = 100;

function filtersOf(query) {
  const days = Math.min(31, Math.max(1, Number(query.get("days")) || 1));
  return {
    types: query.getAll("type").filter((t) => TYPES.some(([known]) => known === t)),
    actor: query.get("actor") || "",
    target: query.get("target") || "",
    q: query.get("q") || "",
    order: query.get("order") === "desc" ? "desc" : "asc",
    days,
  };
}

function apiParams(day, f) {
  const params = [
    ["since", `${day}T00:00:00Z`],
    ["until", `${addDays(day, f.days)}T00:00:00Z`],
    ...f.types.map((t) => ["type", t]),
    ["actor", f.actor],
    ["target", f.target],
    ["q", f.q],
    ["order", f.order],
  ];
  return params.filter(([, v]) => v !== "");
}

function pageParams(f) {
  return [...f.types.map((t) => ["type", t]), ["actor", f.actor], ["target", f.target], ["q", f.q],
    ["order", f.order === "asc" ? "" : f.order], ["days", f.days === 1 ? "" : String(f.days)]];
}

// The users seen in these events (actors, targets, recipients), for the id fields' suggestions: the field
// wants an id, and offers each id with its display name (typing a name finds it in the list).
function usersSeen(events) {
  const names = new Map();
  const note = (user, id) => {
    const uid = (user && user.user_id) || id;
    if (uid && (!names.has(uid) || (user && user.display_name))) names.set(uid, (user && user.display_name) || names.get(uid) || "");
  };
  for (const e of events) {
    const p = e.payload || {};
    note(p.actor, e.actor_id);
    note(p.target || p.recipient, e.target_id);
  }
  return [...names].sort(([a], [b]) => (a < b ? -1 : 1));
}

function filterForm(room, day, f, seen) {
  const field = (id, label, value, extra = {}) => h("div", null, h("label", { for: id }, label),
    extra.hint ? h("p", { class: "hint", id: `${id}-hint` }, extra.hint) : null,
    h("input", { id, name: id, value, maxlength: extra.maxlength || 64, minlength: extra.minlength, type: extra.type || "text",
      autocomplete: "off", list: extra.list, "aria-describedby": extra.hint ? `${id}-hint` : null, spellcheck: extra.list ? "false" : null }));
  const hint = seen.length ? "A user id; pick a name seen here or type part of it." : "A user id, such as u-1234.";
  const users = h("datalist", { id: "users-seen" },
    seen.map(([uid, name]) => h("option", { value: uid, label: name ? `${name} (${uid})` : uid })));
  return h("form", { class: "filters card", method: "get", action: roomLink(room, "day", day), "aria-label": "Filter events" },
    h("fieldset", { class: "types" }, h("legend", null, "Event types"),
      TYPES.map(([type, label]) => h("label", { class: "check" },
        h("input", { type: "checkbox", name: "type", value: type, checked: f.types.includes(type) }), ` ${label}`))),
    h("div", { class: "fields" },
      field("actor", "Acting user id", f.actor, { list: "users-seen", hint }),
      field("target", "Target user id", f.target, { list: "users-seen", hint }),
      field("q", "Chat text contains", f.q, { minlength: 3, maxlength: 200 }),
      h("div", null, h("label", { for: "days" }, "Days"),
        h("input", { id: "days", name: "days", type: "number", min: 1, max: 31, value: f.days })),
      h("div", null, h("label", { for: "order" }, "Order"),
        h("select", { id: "order", name: "order" },
          h("option", { value: "asc", selected: f.order === "asc" }, "Oldest first"),
          h("option", { value: "desc", selected: f.order === "desc" }, "Newest first")))),
    users,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Apply filters"), " ",
      h("a", { href: roomLink(room, "day", day) }, "Clear")));
}

async function sealedDays(room, day, last) {
  const today = todayUtc();
  const to = last < today ? last : today;
  if (day > to) return [];
  return (await api(roomPath(room, "days"), { params: [["from", day], ["to", to]] })).days;
}

function evidenceSection(room, day, f, days, inView, wholeDayInView) {
  const out = h("div", { class: "evidence-status", "aria-live": "polite" });
  const section = h("section", { class: "card evidence", "aria-labelledby": "evidence-title" },
    h("h3", { id: "evidence-title" }, "Evidence"));
  if (f.days === 1) {
    const info = days.find((d) => d.day === day);
    if (!info) {
      section.append(h("p", { id: "seal-state" }, "No events stored for this day: no seal."));
    } else {
      const state = sealState(info);
      section.append(h("p", { id: "seal-state", class: `seal seal-${state.kind}` }, `${state.text}.`));
      if (state.kind === "sealed") {
        section.append(h("p", { class: "actions" },
          evidenceButton(room, day, "Download evidence: whole day", null, out),
          !wholeDayInView && inView.length ? [" ", evidenceButton(room, day, "Download evidence: events in view", inView, out)] : null));
      } else {
        section.append(h("p", { class: "muted" }, "Its evidence can be downloaded once it is sealed."));
      }
    }
  } else if (days.length) {
    section.append(h("ul", { class: "seals" }, days.map((d) => {
      const state = sealState(d);
      return h("li", { class: `seal seal-${state.kind}` }, `${d.day}: ${state.text}. `,
        state.kind === "sealed" ? evidenceButton(room, d.day, `Download evidence of ${d.day}`, null, out) : null);
    })));
  } else {
    section.append(h("p", null, "No events stored for these days: no seal."));
  }
  section.append(h("p", { class: "muted" }, "A bundle is checked offline, with nothing but the public key (",
    h("a", { href: "/v1/seal-keys" }, "the keys seals are signed with"), "): ",
    h("code", null, "roomlogs verify FILE --key PEM"), "."), out);
  return section;
}

// The event a permanent link points at (#e-<id>): the page of the day that holds it, found by following
// the pages' cursors (and kept in the address, so a reload opens the same page).
const MAX_PAGES_SOUGHT = 50;

function wantedEvent() {
  const m = /^#e-([0-9a-f-]{36})$/.exec(location.hash.toLowerCase());
  return m ? m[1] : null;
}

async function pageHolding(room, day, f, cursor, wanted) {
  const fetchPage = (c) => api(roomPath(room, "events"), { params: [...apiParams(day, f), ["limit", String(PAGE)], ["cursor", c || ""]] });
  let doc = await fetchPage(cursor);
  let at = cursor;
  for (let n = 0; wanted && n < MAX_PAGES_SOUGHT && doc.next_cursor && !doc.events.some((e) => e.event_id === wanted); n++) {
    at = doc.next_cursor;
    doc = await fetchPage(at);
  }
  return { doc, cursor: at };
}

// Scroll to the linked event and mark it: highlighted, announced as the current one, focused.
function showWanted(list, wanted) {
  const item = wanted && list.querySelector(`li[data-event-id="${wanted}"]`);
  if (!item) return;
  item.classList.add("current");
  item.setAttribute("aria-current", "true");
  item.scrollIntoView({ block: "center" });
  item.querySelector("a.when").focus({ preventScroll: true });
}

export async function render({ body, room, args, query }) {
  const day = args[1];
  const f = filtersOf(query);
  const last = addDays(day, f.days - 1);
  const span = f.days === 1 ? day : `${day} to ${last}`;
  setTitle(span, room);
  const wanted = wantedEvent();
  const found = await pageHolding(room, day, f, query.get("cursor"), wanted);
  const doc = found.doc;
  const cursor = found.cursor;
  const here = (extra) => withQuery(roomLink(room, "day", day), [...pageParams(f), ...extra]);
  const exportLink = (format) => withQuery(roomPath(room, "export"), [...apiParams(day, f), ["format", format]]);
  const filtered = f.types.length || f.actor || f.target || f.q;
  const days = await sealedDays(room, day, last);
  const wholeDayInView = f.days === 1 && !filtered && !cursor && !doc.next_cursor;
  const inView = f.days === 1 ? doc.events.map((e) => e.event_id) : [];
  const list = doc.events.length
    ? eventList(room, doc.events, `Events of ${span}`, { day: f.days === 1 ? day : null })
    : status(filtered ? "No events match these filters." : "No events stored for this day.");
  const flagged = days.filter((d) => sumAlerts(d.alerts));
  replace(body,
    h("h2", null, `Events of ${span} `, h("span", { class: "muted" }, "(UTC day)")),
    flagged.length
      ? h("p", { class: "alerts-note", id: "day-alerts" }, flagged.map((d, i) => [i ? " " : "",
        alertBadge(sumAlerts(d.alerts), alertsLink(room, [["day", d.day]]), `on ${d.day}`)]))
      : null,
    zoneSwitch(),
    h("nav", { class: "pager", "aria-label": "Days" },
      h("a", { href: withQuery(roomLink(room, "day", addDays(day, -f.days)), pageParams(f)) }, "← Earlier"),
      h("a", { href: withQuery(roomLink(room, "day", addDays(day, f.days)), pageParams(f)) }, "Later →")),
    h("details", { class: "filter-box", open: filtered || matchMedia("(min-width: 40rem)").matches },
      h("summary", null, filtered ? "Filters (active)" : "Filters"), filterForm(room, day, f, usersSeen(doc.events))),
    h("p", { class: "export" }, "Export this view: ",
      h("a", { href: exportLink("csv"), download: `${room}-${day}.csv` }, "CSV"), " · ",
      h("a", { href: exportLink("ndjson"), download: `${room}-${day}.ndjson` }, "NDJSON")),
    evidenceSection(room, day, f, days, inView, wholeDayInView),
    h("p", { class: "muted", id: "count" }, cursor ? `${doc.events.length} more events` : `${doc.events.length}${doc.next_cursor ? "+" : ""} events`),
    list,
    h("nav", { class: "pager", "aria-label": "Pages" },
      cursor ? h("a", { href: here([]) }, "First page") : null,
      doc.next_cursor ? h("a", { href: here([["cursor", doc.next_cursor]]), rel: "next" }, "Next page") : null));
  if (wanted && cursor !== query.get("cursor")) history.replaceState(null, "", here(cursor ? [["cursor", cursor]] : []) + location.hash);
  if (doc.events.length) showWanted(list, wanted);
}
