// Transparency for the owner: how long this room's logs are kept and when the next purge runs, who read
// them (when, how, why), past deletion requests, and a deletion request of their own (confirmed first).

import { api, ApiError, roomPath } from "../api.js";
import { h, plural, replace, scroller, setTitle, status, utcDateTime } from "../dom.js";

function retentionSection(r) {
  const rows = r.stored.map((x) => h("tr", null,
    h("th", { scope: "row" }, x.retention_class),
    h("td", null, plural(x.retention_days, "day")),
    h("td", null, x.oldest_day),
    h("td", null, x.next_purge_on)));
  return h("section", { "aria-labelledby": "retention-title", class: "card" },
    h("h2", { id: "retention-title" }, "Retention"),
    r.retention_class
      ? h("p", null, `New events of this room are kept ${plural(r.retention_days, "day")} (class ${r.retention_class}), then deleted by dropping whole days.`)
      : h("p", null, "The pipeline has no settings for this room yet."),
    r.stored.length
      ? scroller("What is stored now", h("table", { class: "grid" }, h("caption", null, "What is stored now"),
        h("thead", null, h("tr", null, ["Class", "Kept", "Oldest stored day (UTC)", "Next purge (UTC day)"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", null, rows)))
      : status("No events of this room are stored."),
    r.next_purge_after ? h("p", { id: "next-purge" }, `Next purge: the first maintenance run after ${utcDateTime(r.next_purge_after)}.`) : null,
    h("p", { class: "muted" }, `Maintenance last ran: ${utcDateTime(r.last_maintenance_at)}.`),
    r.legal_hold === true ? status("A legal hold keeps this room's rows past retention.", "warn") : null);
}

function auditTable(entries) {
  return h("tbody", null, entries.map((e) => h("tr", null,
    h("td", null, utcDateTime(e.at)),
    h("th", { scope: "row" }, e.subject),
    h("td", null, e.basis || e.identity_type),
    h("td", null, e.staff_reason || "—"),
    h("td", null, e.action),
    h("td", null, e.outcome),
    h("td", null, e.row_count === null ? "—" : e.row_count.toLocaleString("en")))));
}

async function accessSection(room) {
  const section = h("section", { "aria-labelledby": "access-title", class: "card" }, h("h2", { id: "access-title" }, "Who read this room's logs"));
  let doc;
  try {
    doc = await api(roomPath(room, "access-log"), { params: [["limit", "50"]] });
  } catch (error) {
    if (error instanceof ApiError && error.status === 403) {
      section.append(status("Only the room's owner can see who read its logs."));
      return section;
    }
    throw error;
  }
  const body = auditTable(doc.entries);
  const table = h("table", { class: "grid", id: "access-log" },
    h("caption", { class: "sr-only" }, "Access log, newest first"),
    h("thead", null, h("tr", null, ["When", "Who", "As", "Reason (ticket)", "What", "Outcome", "Events"].map((t) => h("th", { scope: "col" }, t)))),
    body);
  section.append(h("p", null, "Every read of this room's logs is recorded: by you, your moderators, support staff (with their ticket) and services."),
    scroller("Access log", table));
  let cursor = doc.next_cursor;
  if (cursor) {
    const more = h("button", { type: "button" }, "Show older entries");
    more.addEventListener("click", async () => {
      const next = await api(roomPath(room, "access-log"), { params: [["limit", "50"], ["cursor", cursor]] });
      body.append(...auditTable(next.entries).children);
      cursor = next.next_cursor;
      if (!cursor) more.remove();
    });
    section.append(more);
  }
  return section;
}

function deletionSection(room, r) {
  const out = h("div", { "aria-live": "polite" });
  const confirmField = h("input", { id: "confirm-room", name: "confirm", autocomplete: "off", required: true });
  const note = h("input", { id: "deletion-note", name: "note", maxlength: 500, autocomplete: "off" });
  const submit = h("button", { type: "submit", class: "danger" }, "Delete all logs of this room");
  const form = h("form", { class: "confirm", hidden: true, "aria-labelledby": "delete-title" },
    h("p", null, "This deletes every stored event of this room for good. It is recorded with your name."),
    h("label", { for: "confirm-room" }, `Type the room id (${room}) to confirm`), confirmField,
    h("label", { for: "deletion-note" }, "Note (optional, kept with the request)"), note,
    h("div", { class: "actions" }, submit));
  const open = h("button", { type: "button", class: "danger", "aria-expanded": "false" }, "Request deletion…");
  open.addEventListener("click", () => {
    form.hidden = false;
    open.setAttribute("aria-expanded", "true");
    confirmField.focus();
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (confirmField.value !== room) {
      replace(out, status("The room id does not match: nothing was deleted.", "error"));
      return;
    }
    submit.disabled = true;
    try {
      const done = await api(roomPath(room, "deletions"), { method: "POST", body: note.value ? { note: note.value } : {} });
      form.hidden = true;
      replace(out, status(`Deleted ${plural(done.rows_deleted, "event")}. Request ${done.request_id} is recorded.`, "ok"));
    } catch (error) {
      submit.disabled = false;
      replace(out, status(error.status === 403 ? "Only the room's owner (or support staff for a case) may delete its logs." : error.message, "error"));
    }
  });
  const past = r.deletion_requests && r.deletion_requests.length
    ? h("ul", null, r.deletion_requests.map((d) => h("li", null,
      `${utcDateTime(d.requested_at)}: ${d.requested_by} (${d.basis}) deleted ${plural(d.rows_deleted, "event")}: `, h("q", null, d.reason))))
    : null;
  return h("section", { "aria-labelledby": "delete-title", class: "card" },
    h("h2", { id: "delete-title" }, "Delete this room's logs"), past, open, form, out);
}

export async function render({ body, room }) {
  setTitle("Transparency", room);
  const retention = await api(roomPath(room, "retention"));
  replace(body, retentionSection(retention), await accessSection(room), deletionSection(room, retention));
}
