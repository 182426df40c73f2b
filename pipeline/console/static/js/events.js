// One event as a list item: time (its permanent link), type, who, to whom, and what was said or done.

import { h, ident, nameText, roomLink } from "./dom.js";
import { timeEl } from "./time.js";

// --- generated from pipeline/events/contract.py by `python -m pipeline.events.generate`: do not edit
export const TYPES = [
  ["chat.message", "Chat"],
  ["user.entered", "Entered"],
  ["user.left", "Left"],
  ["moderation.warn", "Warn"],
  ["moderation.mute", "Mute"],
  ["moderation.unmute", "Unmute"],
  ["moderation.kick", "Kick"],
  ["moderation.ban", "Ban"],
  ["moderation.unban", "Unban"],
  ["gift.sent", "Gift"],
  ["room.settings_changed", "Settings"],
  ["room.permissions_changed", "Permissions"],
];
// --- end of the generated part
const LABELS = Object.fromEntries(TYPES);

// `room`: the user is a link to their record in the room (a user card), one click from any event.
function who(user, fallbackId, room = null) {
  const id = (user && user.user_id) || fallbackId;
  if (!id) return null;
  const name = user && user.display_name;
  // the name (anything its user chose, isolated: <bdi>) and then the trusted id, each whole on hover
  const shown = name ? [nameText(name), " ", h("span", { class: "uid" }, "(", ident(id), ")")] : ident(id);
  return room
    ? h("a", { class: "user", href: roomLink(room, "users", id), title: `${id}: their record in this room` }, shown)
    : h("span", { class: "user" }, shown);
}

function details(e, room) {
  const p = e.payload || {};
  switch (e.type) {
    case "chat.message":
      return [h("q", { class: "chat", dir: "auto" }, e.body || ""), p.text_truncated ? " (cut)" : null];
    case "user.entered":
      return "entered the room";
    case "user.left":
      return `left the room${p.how ? ` (${p.how})` : ""}`;
    case "gift.sent": {
      const item = (p.item && (p.item.name || p.item.item_id)) || "a gift";
      return ["sent ", h("bdi", null, item), ` (${p.credits ?? 0} credits) to `, who(p.recipient, e.target_id, room)];
    }
    case "room.settings_changed":
      return Object.entries(p.changes || {}).map(([k, v], i) => [i ? "; " : "", `${k}: `, h("bdi", null, fmt(v.old)), " → ", h("bdi", null, fmt(v.new))]);
    case "room.permissions_changed":
      return [`${(p.change || "").replaceAll("_", " ")}: `, who(p.target, e.target_id, room)];
    default:
      if (e.type.startsWith("moderation.")) {
        const duration = p.duration_seconds ? ` for ${Math.round(p.duration_seconds / 60)} min` : "";
        return [who(p.target, e.target_id, room), duration, e.body ? [": ", h("q", { class: "reason", dir: "auto" }, e.body)] : null];
      }
      return e.body || "";
  }
}

function fmt(value) {
  return value === null || value === undefined ? "—" : String(value);
}

// `day`: the UTC day the list shows (a time on another date in the viewer's zone says its date).
export function eventItem(room, e, { current = false, day = null } = {}) {
  const link = roomLink(room, "events", e.event_id);
  return h("li", { class: `event t-${e.type.replace(".", "-")}${current ? " current" : ""}`, id: `e-${e.event_id}`,
    "aria-current": current ? "true" : null, "data-event-id": e.event_id },
  h("a", { class: "when", href: link, title: "Permanent link to this event, with its context" },
    timeEl(e.occurred_at, { day: day || e.occurred_at.slice(0, 10) })),
  h("span", { class: "type" }, LABELS[e.type] || e.type),
  h("span", { class: "actor" }, who(e.payload && e.payload.actor, e.actor_id, room) || "—"),
  h("span", { class: "what" }, details(e, room)),
  );
}

export function eventList(room, events, label, options = {}) {
  return h("ol", { class: "events", "aria-label": label },
    events.map((e) => eventItem(room, e, { current: options.current === e.event_id, day: options.day })));
}
