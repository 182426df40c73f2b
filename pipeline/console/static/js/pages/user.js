// A user's record in a room (a user card): what they did (messages, entries, gifts...), the warnings,
// mutes, kicks and bans they received, first and last seen, the room's alerts naming them, and their
// latest messages, paged; links open their events (or the actions against them) in the day view.
// Opened by a click on any user in an event; read and audited as the room's logs.

import { api, roomPath, withQuery } from "../api.js";
import { addDays, h, ident, nameText, plural, replace, roomLink, setTitle, status, todayUtc } from "../dom.js";
import { alertList, alertsLink } from "../alerts.js";
import { eventList, TYPES } from "../events.js";
import { timeEl, zoneSwitch } from "../time.js";

const LABELS = Object.fromEntries(TYPES);
const RECEIVED = [
  ["moderation.warn", "Warnings"],
  ["moderation.mute", "Mutes"],
  ["moderation.kick", "Kicks"],
  ["moderation.ban", "Bans"],
  ["moderation.unmute", "Unmutes"],
  ["moderation.unban", "Unbans"],
  ["gift.sent", "Gifts received"],
  ["room.permissions_changed", "Permission changes"],
];
const MESSAGES = 20;

// The day view of `day`, filtered to the user as actor or target.
function dayLink(room, day, role, user) {
  return withQuery(roomLink(room, "day", day), [[role, user]]);
}

function tally(label, n, id) {
  return h("div", { class: "tally", id }, h("span", { class: "n" }, (n || 0).toLocaleString("en")), h("span", { class: "label" }, label));
}

export async function render({ body, room, args, query }) {
  const user = args[1];
  setTitle(user, room);
  const cursor = query.get("cursor") || "";
  const [record, messages] = await Promise.all([
    api(roomPath(room, "users", encodeURIComponent(user))),
    api(roomPath(room, "users", encodeURIComponent(user), "events"),
      { params: [["type", "chat.message"], ["limit", String(MESSAGES)], ["cursor", cursor]] }),
  ]);
  const a = record.actions;
  const r = record.received;
  const lastDay = record.last_seen ? record.last_seen.slice(0, 10) : todayUtc();
  const firstDay = record.first_seen ? record.first_seen.slice(0, 10) : lastDay;
  const seen = record.first_seen !== null;
  const received = RECEIVED.filter(([t], i) => i < 4 || r[t]);
  const others = Object.keys(a).filter((t) => !["chat.message", "user.entered"].includes(t));
  const here = (extra) => withQuery(location.pathname, extra);
  replace(body,
    h("section", { class: "card user-card", "aria-labelledby": "user-title" },
      h("h2", { id: "user-title" }, record.display_name ? [nameText(record.display_name), " "] : null,
        h("span", { class: "uid" }, "(", ident(user), ")")),
      h("p", { class: "muted" }, `In this room, UTC days ${record.from} to ${record.to}.`),
      seen
        ? h("dl", { class: "facts" },
          h("dt", null, "First seen"), h("dd", { id: "first-seen" }, timeEl(record.first_seen, { full: true })),
          h("dt", null, "Last seen"), h("dd", { id: "last-seen" }, timeEl(record.last_seen, { full: true })),
          h("dt", null, "Days active"), h("dd", null, String(record.days_active)))
        : status("No events of this user in this room over these days."),
      h("h3", null, "What they did"),
      h("div", { class: "tallies", id: "actions" },
        tally("Messages", a["chat.message"], "n-messages"), tally("Entries", a["user.entered"], "n-entries"),
        others.map((t) => tally(LABELS[t] || t, a[t]))),
      h("h3", null, "What they received"),
      h("div", { class: "tallies", id: "received" }, received.map(([t, label]) => tally(label, r[t], `n-${t.replace(".", "-")}`))),
      seen
        ? h("p", { class: "links" },
          h("a", { href: dayLink(room, lastDay, "actor", user), id: "their-events" }, `Their events on ${lastDay}`), " · ",
          h("a", { href: withQuery(dayLink(room, firstDay, "actor", user), [["days", String(Math.min(31, dayCount(firstDay, lastDay)))]]) },
            "all their events since first seen"), " · ",
          h("a", { href: withQuery(dayLink(room, firstDay, "target", user), [["days", String(Math.min(31, dayCount(firstDay, lastDay)))]]) },
            "actions against them"))
        : null),
    h("section", { class: "card", "aria-labelledby": "user-alerts" },
      h("h3", { id: "user-alerts" }, "Alerts naming them"),
      record.alerts.length
        ? [alertList(room, record.alerts, "Alerts naming this user"),
          record.more_alerts ? h("p", null, h("a", { href: alertsLink(room) }, "More in the room's alerts")) : null]
        : h("p", { class: "muted" }, "None.")),
    h("section", { "aria-labelledby": "user-messages" },
      h("h3", { id: "user-messages" }, "Latest messages"),
      zoneSwitch(),
      messages.events.length
        ? eventList(room, messages.events, "Their latest messages", { day: "each" }) // no one day: each time with its date
        : h("p", { class: "muted" }, cursor ? "No more messages." : `No messages in the last ${plural(31, "day")}.`),
      h("nav", { class: "pager", "aria-label": "Pages" },
        cursor ? h("a", { href: here([]) }, "Newest") : null,
        messages.next_cursor ? h("a", { href: here([["cursor", messages.next_cursor]]), rel: "next" }, "Older messages") : null)));
}

function dayCount(first, last) {
  let n = 1;
  for (let d = first; d < last && n < 31; d = addDays(d, 1)) n++;
  return n;
}
