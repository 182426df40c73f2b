// Transparency: how long this room's logs are kept and when the next purge runs; who read them (when, how,
// why), paged and filtered, the reader's own reads folded away by default; and, for those who may delete
// (the owner, support staff for a case), deleting the room's logs after a confirmation in a dialog.

import { api, ApiError, roomPath, withQuery } from "../api.js";
import { add, h, ident, nameText, plural, replace, roomLink, scroller, setTitle, status } from "../dom.js";
import { dateTimeText, timeEl, zoneSwitch } from "../time.js";

const PAGE = 25;

// What a read was, in plain words, by the audit's action (the API's route table names them).
const ACTIONS = [
  ["events.list", "Read events"],
  ["events.get", "Read one event"],
  ["events.context", "Read an event in context"],
  ["days", "Read the calendar"],
  ["export", "Exported events"],
  ["evidence", "Downloaded evidence"],
  ["tail", "Live view"],
  ["insights", "Read insights"],
  ["access_log.read", "Read this access log"],
  ["retention.read", "Read retention"],
  ["room_logs.delete", "Deleted the logs"],
];
const ACTION_WORDS = Object.fromEntries(ACTIONS);
const OUTCOMES = [
  ["ok", "Answered"],
  ["denied", "Refused"],
  ["rejected", "Rejected (bad request)"],
  ["rate_limited", "Rate limited"],
  ["error", "Failed"],
  ["started", "Started"],
  ["finished", "Ended"],
  ["aborted", "Cut off"],
];
const OUTCOME_WORDS = Object.fromEntries(OUTCOMES);
const DETAIL_WORDS = {
  client_closed: "closed by the reader",
  max_duration: "time limit, reconnects",
  shutdown: "server restart",
  access_revoked: "access withdrawn",
  session_ended: "signed out",
};

function retentionSection(r) {
  const rows = r.stored.map((x) => h("tr", null,
    h("th", { scope: "row" }, x.retention_class),
    h("td", { "data-label": "Kept" }, plural(x.retention_days, "day")),
    h("td", { "data-label": "Oldest stored day (UTC)" }, x.oldest_day),
    h("td", { "data-label": "Next purge (UTC day)" }, x.next_purge_on)));
  return h("section", { "aria-labelledby": "retention-title", class: "card" },
    h("h2", { id: "retention-title" }, "Retention"),
    r.retention_class
      ? h("p", null, `New events of this room are kept ${plural(r.retention_days, "day")} (class ${r.retention_class}), then deleted by dropping whole days.`)
      : h("p", null, "The pipeline has no settings for this room yet."),
    r.stored.length
      ? scroller("What is stored now", h("table", { class: "grid stack" }, h("caption", null, "What is stored now"),
        h("thead", null, h("tr", null, ["Class", "Kept", "Oldest stored day (UTC)", "Next purge (UTC day)"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", null, rows)))
      : status("No events of this room are stored."),
    r.next_purge_after ? h("p", { id: "next-purge" }, "Next purge: the first maintenance run after ", timeEl(r.next_purge_after, { full: true }), ".") : null,
    h("p", { class: "muted" }, "Maintenance last ran: ", timeEl(r.last_maintenance_at, { full: true }), "."),
    r.legal_hold === true ? status("A legal hold keeps this room's rows past retention.", "warn") : null);
}

function filtersOf(query) {
  return {
    who: (query.get("who") || "").trim(),
    what: ACTION_WORDS[query.get("what")] ? query.get("what") : "",
    outcome: OUTCOME_WORDS[query.get("outcome")] ? query.get("outcome") : "",
    mine: query.get("mine") === "1",
  };
}

function pageParams(f) {
  return [["who", f.who], ["what", f.what], ["outcome", f.outcome], ["mine", f.mine ? "1" : ""]];
}

function outcomeText(e) {
  const words = OUTCOME_WORDS[e.outcome] || e.outcome;
  const why = e.detail ? DETAIL_WORDS[e.detail] || e.detail.replaceAll("_", " ") : "";
  return why ? `${words} (${why})` : words;
}

function auditRows(entries) {
  return entries.map((e) => h("tr", { class: `o-${e.outcome}` },
    h("td", { class: "at", "data-label": "When" }, timeEl(e.at, { full: true })),
    h("th", { scope: "row", class: "who" }, ident(e.subject)),
    h("td", { "data-label": "As" }, e.basis || e.identity_type),
    h("td", { "data-label": "Ticket", class: e.staff_reason ? null : "none" }, e.staff_reason ? nameText(e.staff_reason) : "—"),
    h("td", { "data-label": "What", title: e.action }, ACTION_WORDS[e.action] || e.action),
    h("td", { "data-label": "Outcome" }, outcomeText(e)),
    h("td", { "data-label": "Events" }, e.row_count === null ? "—" : e.row_count.toLocaleString("en"))));
}

function filterForm(room, f, subjects) {
  const select = (id, label, value, options) => h("div", null, h("label", { for: id }, label),
    h("select", { id, name: id }, h("option", { value: "" }, "Any"),
      options.map(([v, words]) => h("option", { value: v, selected: v === value }, words))));
  return h("form", { class: "filters", method: "get", action: roomLink(room, "transparency"), "aria-label": "Filter the access log" },
    h("div", { class: "fields" },
      h("div", null, h("label", { for: "who" }, "Who (user or service id)"),
        h("input", { id: "who", name: "who", value: f.who, maxlength: 64, autocomplete: "off", spellcheck: "false", list: "readers-seen" }),
        h("datalist", { id: "readers-seen" }, subjects.map((s) => h("option", { value: s })))),
      select("what", "What", f.what, ACTIONS),
      select("outcome", "Outcome", f.outcome, OUTCOMES)),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "mine", value: "1", checked: f.mine }), " Include my own reads"),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Apply"), h("a", { href: roomLink(room, "transparency") }, "Clear")));
}

async function accessSection(room, session, query) {
  const section = h("section", { "aria-labelledby": "access-title", class: "card" }, h("h2", { id: "access-title" }, "Who read this room's logs"));
  const f = filtersOf(query);
  const cursor = query.get("cursor") || "";
  let doc;
  try {
    doc = await api(roomPath(room, "access-log"), {
      params: [["limit", String(PAGE)], ["subject", f.who], ["action", f.what], ["outcome", f.outcome],
        ["exclude_own", f.mine ? "" : "true"], ["cursor", cursor]],
    });
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) {
      section.append(status("Only the room's owner can see who read its logs."));
      return section;
    }
    throw error;
  }
  const here = (extra) => withQuery(roomLink(room, "transparency"), [...pageParams(f), ...extra]);
  const subjects = [...new Set(doc.entries.map((e) => e.subject))].sort();
  const table = h("table", { class: "grid stack audit", id: "access-log" },
    h("caption", { class: "sr-only" }, "Access log, newest first"),
    h("thead", null, h("tr", null, ["When", "Who", "As", "Ticket", "What", "Outcome", "Events"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", null, auditRows(doc.entries)));
  const filtered = f.who || f.what || f.outcome;
  add(section, [
    h("p", null, "Every read of this room's logs is recorded: by you, your moderators, support staff (with their ticket) and services."),
    h("details", { class: "filter-box", open: Boolean(filtered) || matchMedia("(min-width: 40rem)").matches },
      h("summary", null, filtered ? "Filters (active)" : "Filters"), filterForm(room, f, subjects)),
    f.mine ? null : h("p", { class: "muted", id: "own-folded" }, "Your own reads (as ", ident(session.subject), ") are folded away. ",
      h("a", { href: here([["mine", "1"]]) }, "Show them too")),
    doc.entries.length
      ? scroller("Access log", table)
      : status(filtered ? "No reads match these filters." : f.mine ? "No reads recorded." : "Nobody else has read this room's logs."),
    h("nav", { class: "pager", "aria-label": "Access log pages" },
      cursor ? h("a", { href: here([]) }, "Newest entries") : null,
      doc.next_cursor ? h("a", { href: here([["cursor", doc.next_cursor]]), rel: "next" }, "Older entries") : null)]);
  return section;
}

// The owner (or support staff for a case) may delete; moderators are not offered what they cannot do.
function mayDelete(session, myRooms, room) {
  if (session.kind === "staff") return Boolean(session.staff_reason);
  return myRooms.some((r) => r.room_id === room && r.role === "owner");
}

function deletionDialog(room, opener, out, done) {
  const confirmField = h("input", { id: "confirm-room", name: "confirm", autocomplete: "off", required: true, spellcheck: "false" });
  const note = h("input", { id: "deletion-note", name: "note", maxlength: 500, autocomplete: "off" });
  const wrong = h("div", { "aria-live": "polite" });
  const submit = h("button", { type: "submit", class: "danger" }, "Delete for good, now");
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel");
  const form = h("form", { method: "dialog" },
    h("h2", { id: "delete-dialog-title" }, "Delete all logs of room ", ident(room), "?"),
    h("p", { id: "delete-dialog-what" }, "Every stored event of this room is deleted for good, now: it cannot be undone, and no copy is kept. "
      + "Past events leave the calendar, the day views, exports and insights at once. The deletion itself is recorded with your name."),
    h("label", { for: "confirm-room" }, "Type the room id (", ident(room), ") to confirm"), confirmField,
    h("label", { for: "deletion-note" }, "Note (optional, kept with the request)"), note,
    wrong,
    h("div", { class: "actions" }, cancel, submit));
  const dialog = h("dialog", { id: "delete-dialog", "aria-labelledby": "delete-dialog-title", "aria-describedby": "delete-dialog-what" }, form);
  cancel.addEventListener("click", () => dialog.close("cancel"));
  dialog.addEventListener("close", () => {
    replace(wrong);
    opener.focus();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (confirmField.value !== room) {
      replace(wrong, status("The room id does not match: nothing was deleted.", "error"));
      confirmField.focus();
      return;
    }
    submit.disabled = true;
    try {
      const result = await api(roomPath(room, "deletions"), { method: "POST", body: note.value ? { note: note.value } : {} });
      dialog.close("deleted");
      done(result);
    } catch (error) {
      replace(wrong, status(error.status === 403 ? "Only the room's owner (or support staff for a case) may delete its logs." : error.message, "error"));
    } finally {
      submit.disabled = false;
    }
  });
  return { dialog, open: () => { confirmField.value = ""; dialog.showModal(); confirmField.focus(); } };
}

function deletionSection(room, r, allowed) {
  const out = h("div", { "aria-live": "polite", id: "deletion-status" });
  const past = r.deletion_requests && r.deletion_requests.length
    ? h("ul", { class: "past-deletions" }, r.deletion_requests.map((d) => h("li", null,
      dateTimeText(d.requested_at), ": ", ident(d.requested_by), ` (${d.basis}) deleted ${plural(d.rows_deleted, "event")}`,
      d.reason ? [": ", h("q", { dir: "auto" }, d.reason)] : null)))
    : null;
  const section = h("section", { "aria-labelledby": "delete-title", class: "card danger-zone" },
    h("h2", { id: "delete-title" }, "Delete this room's logs"), past);
  if (!allowed) {
    section.append(h("p", { class: "muted" }, "Only the room's owner can delete its logs."));
    return section;
  }
  const opener = h("button", { type: "button", class: "danger", "aria-haspopup": "dialog" }, "Delete this room's logs…");
  const { dialog, open } = deletionDialog(room, opener, out, (result) => {
    replace(out, status(`Deleted ${plural(result.rows_deleted, "event")} for good. Request ${result.request_id} is recorded.`, "ok"));
  });
  opener.addEventListener("click", open);
  section.append(h("p", null, "Deletes every stored event of this room at once and for good."), opener, out, dialog);
  return section;
}

export async function render({ body, room, session, query }) {
  setTitle("Transparency", room);
  const [retention, mine] = await Promise.all([
    api(roomPath(room, "retention")),
    session.kind === "staff" ? Promise.resolve({ rooms: [] }) : api("/v1/me/rooms"),
  ]);
  const allowed = mayDelete(session, mine.rooms, room);
  const access = await accessSection(room, session, query);
  replace(body, zoneSwitch(), retentionSection(retention),
    allowed || retention.deletion_requests ? deletionSection(room, retention, allowed) : null, access);
}
