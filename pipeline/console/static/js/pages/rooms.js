// My rooms: the rooms the user owns or moderates. Support staff also open any room by id for a case.

import { api } from "../api.js";
import { h, ident, replace, roomLink, scroller, setTitle, status } from "../dom.js";
import { timeEl } from "../time.js";
import { alertBadge, alertsLink } from "../alerts.js";

function staffForm(session) {
  const out = h("div", { "aria-live": "polite" });
  const room = h("input", { id: "open-room", name: "room", required: true, maxlength: 64, autocomplete: "off" });
  const reason = h("input", { id: "case-reason", name: "reason", required: true, maxlength: 64,
    placeholder: "SUP-1234", autocomplete: "off", value: session.staff_reason || "" });
  const form = h("form", { class: "card", id: "case-form", "aria-labelledby": "case-title" },
    h("h2", { id: "case-title" }, "Open a room for a case"),
    h("p", null, "Support staff may open any room after stating the ticket or case id they are working on. It is recorded with every read you make until you change it."),
    h("div", { class: "fields" },
      h("div", null, h("label", { for: "case-reason" }, "Ticket or case id"), reason),
      h("div", null, h("label", { for: "open-room" }, "Room id"), room)),
    h("button", { type: "submit" }, "Open room"), out);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api("/v1/session/reason", { method: "PUT", body: { reason: reason.value.trim() } });
    } catch (error) {
      replace(out, status(error.message, "error"));
      return;
    }
    location.assign(roomLink(room.value.trim()) + "/");
  });
  return form;
}

export async function render({ body, session }) {
  setTitle("Your rooms");
  const doc = await api("/v1/me/rooms");
  const rooms = doc.rooms;
  const list = rooms.length
    ? scroller("Your rooms", h("table", { class: "grid stack" },
      h("caption", { class: "sr-only" }, "Rooms you own or moderate"),
      h("thead", null, h("tr", null, ["Room", "Your role", "Privacy", "Last activity", "Alerts (7 days)"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", null, rooms.map((r) => h("tr", null,
        h("th", { scope: "row" }, h("a", { href: roomLink(r.room_id) + "/" }, ident(r.room_id))),
        h("td", { "data-label": "Your role" }, r.role),
        h("td", { "data-label": "Privacy" }, r.privacy || "—"),
        h("td", { "data-label": "Last activity" }, timeEl(r.last_activity, { full: true })),
        h("td", { "data-label": "Alerts (7 days)", class: "alerts" },
          r.alerts ? alertBadge(r.alerts, alertsLink(r.room_id), "in the last 7 days") : "none"))))))
    : status("You do not own or moderate any room.");
  replace(body, h("h1", null, "Your rooms"), list, session.kind === "staff" ? staffForm(session) : null);
}
