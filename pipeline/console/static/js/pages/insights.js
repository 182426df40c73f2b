// Insights: when the room is busy, who comes and goes, who talks most, moderation and gifts per week.

import { api, roomPath } from "../api.js";
import { barChart } from "../charts.js";
import { h, replace, scroller, setTitle, status } from "../dom.js";

const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const ACTIONS = ["warn", "mute", "kick", "ban", "unmute", "unban"];

function moderationSeries(weekly) {
  const series = ACTIONS.map((a) => ({ name: a, values: weekly.map((w) => w.moderation[a] || 0) }));
  const used = series.filter((x) => x.values.some(Boolean));
  return used.length ? used : [{ name: "actions", values: weekly.map(() => 0) }];
}

export async function render({ body, room, query }) {
  setTitle("Insights", room);
  const weeks = Math.min(12, Math.max(1, Number(query.get("weeks")) || 4));
  const tz = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  const doc = await api(roomPath(room, "insights"), { params: [["weeks", String(weeks)], ["tz", tz]] });
  const hours = [...Array(24).keys()].map((n) => String(n).padStart(2, "0"));
  const other = doc.hour_of_day.map((n, i) => n - doc.chat_by_hour[i]);
  const days = doc.days.map((d) => d.day.slice(5));
  const weekLabels = doc.weekly.map((w) => w.week_start.slice(5));
  const charts = doc.total === 0 ? [status(`No activity in the last ${weeks} weeks.`)] : [
    barChart({ title: `Activity by hour of day (${doc.tz})`, labels: hours, every: 3,
      series: [{ name: "chat messages", values: doc.chat_by_hour }, { name: "other events", values: other }] }),
    barChart({ title: `Activity by day of week (${doc.tz})`, labels: WEEKDAYS, series: [{ name: "events", values: doc.day_of_week }] }),
    barChart({ title: "Entries and exits per day", labels: days, grouped: true, every: 7,
      series: [{ name: "entries", values: doc.days.map((d) => d.entered) }, { name: "exits", values: doc.days.map((d) => d.left) }] }),
    barChart({ title: "Moderation actions per week", labels: weekLabels,
      series: moderationSeries(doc.weekly) }),
    barChart({ title: "Gifts per week", labels: weekLabels, series: [{ name: "gifts", values: doc.weekly.map((w) => w.gifts) }] }),
  ];
  const top = doc.top_chatters.length
    ? scroller("Top chatters", h("table", { class: "grid chatters" },
      h("caption", null, "Top chatters"),
      h("thead", null, h("tr", null, h("th", { scope: "col" }, "User"), h("th", { scope: "col" }, "Messages"))),
      h("tbody", null, doc.top_chatters.map((c) => h("tr", null,
        h("th", { scope: "row" }, c.display_name ? `${c.display_name} (${c.user_id})` : c.user_id),
        h("td", null, c.messages.toLocaleString("en")))))))
    : null;
  replace(body,
    h("h2", null, `The last ${weeks} weeks `, h("span", { class: "muted" }, `(${doc.total.toLocaleString("en")} events)`)),
    h("form", { method: "get", class: "inline" }, h("label", { for: "weeks" }, "Weeks"),
      h("input", { id: "weeks", name: "weeks", type: "number", min: 1, max: 12, value: weeks }), " ",
      h("button", { type: "submit" }, "Show")),
    h("div", { class: "charts" }, charts),
    top);
}
