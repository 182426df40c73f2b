// Alerts as the console shows them: a badge (on a room, a calendar day, a day's page), one alert as a list
// item (what was flagged, when, who, the evidence), and the labels of the detectors.
// Data comes from the API: /v1/rooms/{room}/alerts, the `alerts` of /v1/me/rooms and of a room's days,
// a user's record, and the live tail's `alert` frames.

import { h, ident, plural, roomLink } from "./dom.js";
import { timeEl } from "./time.js";

// pipeline/detectors/params.py DETECTORS, in its order (an unknown name is shown as it is)
export const DETECTORS = [
  ["chat_flood", "Chat flood"],
  ["spam_wave", "Spam wave"],
  ["raid", "Raid"],
  ["moderator_abuse", "Moderator abuse"],
  ["permission_churn", "Permission churn"],
  ["gift_burst", "Gift burst"],
];
const LABELS = Object.fromEntries(DETECTORS);

export function detectorLabel(name) {
  return LABELS[name] || name;
}

export function alertsLink(room, params = []) {
  const query = new URLSearchParams(params.filter(([, v]) => v)).toString();
  return roomLink(room, "alerts") + (query ? `?${query}` : "");
}

export function userLink(room, user) {
  return roomLink(room, "users", user);
}

// "⚠ 3 alerts" (a link when `href` is given); nothing when there are none.
export function alertBadge(n, href = null, what = "") {
  if (!n) return null;
  const text = plural(n, "alert");
  const label = what ? `${text} ${what}` : text;
  // the word is a `unit`: where space is short (a calendar day at phone width) only "⚠ 2" is drawn
  const content = [h("span", { "aria-hidden": "true" }, "⚠ "), n.toLocaleString("en"), h("span", { class: "unit" }, n === 1 ? " alert" : " alerts")];
  return href
    ? h("a", { class: "alert-badge", href, title: label, "aria-label": label }, content)
    : h("span", { class: "alert-badge", title: label }, content);
}

export function sumAlerts(byDetector) {
  return Object.values(byDetector || {}).reduce((a, n) => a + n, 0);
}

function countsText(counts) {
  return Object.entries(counts || {}).map(([k, v]) => `${k.replaceAll("_", " ")}: ${v}`).join(", ");
}

// One alert: the detector, its window (a link to that moment of the day view), the users involved (each
// a link to their record in the room), what was counted, how many events stand behind it. `shownDay`: the
// one UTC day the list shows (its times then say no date); without it each time says its date.
export function alertItem(room, a, { shownDay = null } = {}) {
  const day = a.window_start.slice(0, 10);
  const first = (a.event_ids || [])[0];
  const at = roomLink(room, "day", day) + (first ? `#e-${first}` : "");
  return h("li", { class: "alert", id: `a-${a.alert_id}`, "data-alert-id": a.alert_id, "data-detector": a.detector },
    h("span", { class: "detector" }, detectorLabel(a.detector)),
    h("a", { class: "when", href: at, title: "The alert's first event in the day view" }, timeEl(a.window_start, { day: shownDay || "each" })),
    h("span", { class: "users" }, (a.users || []).length
      ? (a.users || []).map((u, i) => [i ? ", " : "", h("a", { class: "user", href: userLink(room, u) }, ident(u))])
      : "the room"),
    h("span", { class: "what muted" }, countsText(a.counts),
      ` · ${plural((a.event_ids || []).length, "event")}`));
}

export function alertList(room, alerts, label, options = {}) {
  return h("ol", { class: "alerts", "aria-label": label }, alerts.map((a) => alertItem(room, a, options)));
}
