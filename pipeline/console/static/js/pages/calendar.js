// A room's calendar: one month, the days with activity, their counts per type and their seal (sealed, open,
// not sealed yet); each day opens the day view, where its evidence can be downloaded.

import { api, roomPath } from "../api.js";
import { addDays, h, replace, roomLink, scroller, setTitle, status, todayUtc } from "../dom.js";
import { TYPES } from "../events.js";
import { sealState } from "../seals.js";
import { alertBadge, alertsLink, sumAlerts } from "../alerts.js";

const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const SEAL_WORDS = { sealed: "Sealed", open: "Open", unsealed: "No seal yet" };

function monthOf(query) {
  const asked = query.get("month") || "";
  return /^\d{4}-\d{2}$/.test(asked) ? asked : todayUtc().slice(0, 7);
}

function shiftMonth(month, n) {
  const d = new Date(month + "-01T00:00:00Z");
  d.setUTCMonth(d.getUTCMonth() + n);
  return d.toISOString().slice(0, 7);
}

function monthName(month) {
  return new Date(month + "-01T00:00:00Z").toLocaleDateString("en", { month: "long", year: "numeric", timeZone: "UTC" });
}

export async function render({ body, room, query }) {
  const month = monthOf(query);
  setTitle(monthName(month), room);
  const first = month + "-01";
  const last = addDays(shiftMonth(month, 1) + "-01", -1);
  const today = todayUtc();
  const to = last < today ? last : today;
  const days = new Map();
  if (first <= to) {
    const doc = await api(roomPath(room, "days"), { params: [["from", first], ["to", to]] });
    for (const d of doc.days) days.set(d.day, d);
  }
  const offset = (new Date(first + "T00:00:00Z").getUTCDay() + 6) % 7;
  const cells = [];
  for (let i = 0; i < offset; i++) cells.push(h("td", { class: "empty" }));
  for (let day = first; day <= last; day = addDays(day, 1)) {
    const info = days.get(day);
    const n = Number(day.slice(8));
    if (info) {
      const chat = info.by_type["chat.message"] || 0;
      const mod = Object.entries(info.by_type).filter(([t]) => t.startsWith("moderation.")).reduce((a, [, v]) => a + v, 0);
      cells.push(h("td", { class: `active seal-${sealState(info).kind}` }, h("a", { href: roomLink(room, "day", day), "data-day": day },
        h("span", { class: "n" }, n),
        h("span", { class: "total" }, info.total.toLocaleString("en"), h("span", { class: "unit" }, info.total === 1 ? " event" : " events")),
        h("span", { class: "mix" }, `${chat.toLocaleString("en")} chat`, mod ? ` · ${mod.toLocaleString("en")} mod` : ""),
        h("span", { class: "seal" }, SEAL_WORDS[sealState(info).kind]),
        alertBadge(sumAlerts(info.alerts)))));
    } else {
      cells.push(h("td", { class: day === today ? "today" : null }, h("span", { class: "n" }, n)));
    }
  }
  const rows = [];
  for (let i = 0; i < cells.length; i += 7) rows.push(h("tr", null, cells.slice(i, i + 7)));
  const nav = h("nav", { class: "pager", "aria-label": "Months" },
    h("a", { href: `${roomLink(room)}/?month=${shiftMonth(month, -1)}` }, "← Previous month"),
    month < today.slice(0, 7) ? h("a", { href: `${roomLink(room)}/?month=${shiftMonth(month, 1)}` }, "Next month →") : null);
  const active = [...days.values()];
  const typesSeen = TYPES.filter(([t]) => active.some((d) => d.by_type[t]));
  const detail = active.length
    ? scroller("Events per type", h("table", { class: "grid counts stack" },
      h("caption", null, "Events per type (UTC days)"),
      h("thead", null, h("tr", null, h("th", { scope: "col" }, "Day"), h("th", { scope: "col" }, "Total"),
        typesSeen.map(([, label]) => h("th", { scope: "col" }, label)), h("th", { scope: "col" }, "Seal"))),
      h("tbody", null, active.map((d) => h("tr", null,
        h("th", { scope: "row" }, h("a", { href: roomLink(room, "day", d.day) }, d.day)),
        h("td", { "data-label": "Total" }, d.total.toLocaleString("en")),
        typesSeen.map(([t, label]) => h("td", { "data-label": label }, (d.by_type[t] || 0).toLocaleString("en"))),
        h("td", { class: `seal seal-${sealState(d).kind}`, "data-label": "Seal" }, sealState(d).text))))))
    : status("No activity stored for this month.");
  const flagged = active.filter((d) => sumAlerts(d.alerts));
  replace(body,
    h("h2", null, monthName(month)), nav,
    flagged.length
      ? h("p", { class: "alerts-note", id: "month-alerts" }, alertBadge(flagged.reduce((a, d) => a + sumAlerts(d.alerts), 0)),
        " this month, on ", flagged.map((d, i) => [i ? ", " : "", h("a", { href: alertsLink(room, [["day", d.day]]) }, d.day)]), ".")
      : null,
    h("p", { class: "muted day-note" }, "Days are UTC days: a day runs from 00:00 to 24:00 UTC."),
    h("table", { class: "calendar" },
      h("caption", { class: "sr-only" }, `Days of ${monthName(month)} with activity`),
      h("thead", null, h("tr", null, WEEKDAYS.map((w) => h("th", { scope: "col" }, w)))),
      h("tbody", null, rows)),
    detail);
}
