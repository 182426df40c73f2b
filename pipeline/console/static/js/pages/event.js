// An event's permanent page: the event, marked, between the events just before and after it.

import { api, roomPath } from "../api.js";
import { h, ident, replace, roomLink, setTitle } from "../dom.js";
import { eventList } from "../events.js";
import { timeEl, zoneSwitch } from "../time.js";

export async function render({ body, room, args }) {
  const id = args[1].toLowerCase();
  setTitle("Event", room);
  const doc = await api(roomPath(room, "events", id, "context"), { params: [["before", "10"], ["after", "10"]] });
  const e = doc.event;
  const all = [...doc.before, e, ...doc.after];
  replace(body,
    h("h2", null, "Event in context"),
    h("dl", { class: "facts" },
      h("dt", null, "When"), h("dd", null, timeEl(e.occurred_at, { full: true })),
      h("dt", null, "Type"), h("dd", null, e.type),
      h("dt", null, "Event id"), h("dd", null, h("code", null, ident(e.event_id))),
      h("dt", null, "Permanent link"), h("dd", null, h("a", { href: roomLink(room, "events", e.event_id) },
        ident(location.origin + roomLink(room, "events", e.event_id))))),
    zoneSwitch(),
    h("p", null, `${doc.before.length} events before and ${doc.after.length} after it. `,
      h("a", { href: roomLink(room, "day", e.occurred_at.slice(0, 10)) + `#e-${e.event_id}` }, `Open the whole day (${e.occurred_at.slice(0, 10)}, UTC)`)),
    eventList(room, all, "The event and its context", { current: e.event_id }));
}
