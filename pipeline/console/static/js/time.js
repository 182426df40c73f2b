// Times as the viewer reads them: in their own time zone (or UTC, their choice, remembered in this browser),
// with the exact UTC time on hover. Days (the calendar, a day's page, seals, retention) stay UTC days, and
// the pages say so.

import { h } from "./dom.js";

const KEY = "roomlogs.times";

export function zoneMode() {
  try {
    return localStorage.getItem(KEY) === "utc" ? "utc" : "local";
  } catch {
    return "local";
  }
}

function setZoneMode(mode) {
  try {
    localStorage.setItem(KEY, mode);
  } catch {
    // storage refused (private mode): the choice lasts for this page only
  }
}

export function localZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

function zoneOf() {
  return zoneMode() === "utc" ? "UTC" : localZone();
}

function parts(iso) {
  const fmt = new Intl.DateTimeFormat("en-CA", {
    timeZone: zoneOf(), year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "short",
  });
  const out = {};
  for (const p of fmt.formatToParts(new Date(iso))) out[p.type] = p.value;
  return out;
}

export function utcText(iso) {
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC`;
}

// "20:01:00" (and the date when it is not `day`), in the chosen zone.
export function clockText(iso, day = null) {
  const p = parts(iso);
  const date = `${p.year}-${p.month}-${p.day}`;
  const time = `${p.hour}:${p.minute}:${p.second}`;
  return day && date !== day ? `${time} (${date})` : time;
}

// "2026-12-06 21:01:00 CET", in the chosen zone.
export function dateTimeText(iso) {
  if (!iso) return "—";
  const p = parts(iso);
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${zoneMode() === "utc" ? "UTC" : p.timeZoneName}`;
}

// A <time> showing the moment in the chosen zone; hovering shows it in UTC.
export function timeEl(iso, { day = null, full = false, cls = null } = {}) {
  if (!iso) return "—";
  return h("time", { datetime: iso, title: utcText(iso), class: cls }, full ? dateTimeText(iso) : clockText(iso, day));
}

// The switch between local time and UTC, with the day boundary stated; a change re-renders the page.
export function zoneSwitch() {
  const mode = zoneMode();
  const choice = (value, label) => h("label", { class: "check" },
    h("input", { type: "radio", name: "times", value, checked: mode === value }), ` ${label}`);
  const box = h("fieldset", { class: "zone-switch" },
    h("legend", null, "Times in"),
    choice("local", `your time (${localZone()})`), choice("utc", "UTC"),
    h("span", { class: "muted day-note" }, "Days are UTC days."));
  box.addEventListener("change", (event) => {
    setZoneMode(event.target.value);
    location.reload();
  });
  return box;
}
