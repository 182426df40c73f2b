// An event's permanent page: the event, marked, between the events just before and after it.

import { api, roomPath } from "../api.js";
import { h, replace, roomLink, setTitle, utcDate, utcDateTime } from "../dom.js";
import { eventList } from "../events.js";

export async function render({ body, room, args }) {
  const id = args[1].toLowerCase();
  setTitle("Event", room);
  const doc = await api(roomPath(room, "events", id, "context"), { params: [["before", "10"], ["after", "10"]] });
  const e = doc.event;
  const all = [...doc.before, e, ...doc.after];
  replace(body,
    h("h2", null, "Event in context"),
    h("dl", { class: "facts" },
      h("dt", null, "When"), h("dd", null, utcDateTime(e.occurred_at)),
      h("dt", null, "Type"), h("dd", null, e.type),
      h("dt", null, "Event id"), h("dd", null, h("code", null, e.event_id)),
      h("dt", null, "Permanent link"), h("dd", null, h("a", { href: roomLink(room, "events", e.event_id) }, location.origin + roomLink(room, "events", e.event_id)))),
    h("p", null, `${doc.before.length} events before and ${doc.after.length} after it (UTC). `,
      h("a", { href: roomLink(room, "day", utcDate(e.occurred_at)) + `#e-${e.event_id}` }, "Open the whole day")),
    eventList(room, all, "The event and its context", { current: e.event_id }));
}
