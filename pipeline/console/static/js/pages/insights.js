// Insights: when the room is busy, who comes and goes, who talks most, moderation and gifts per week, over
// a range the reader chooses. Every chart names its axes and labels every bar; a chart with nothing to show
// says why instead of drawing an empty frame.

import { api, roomPath } from "../api.js";
import { barChart } from "../charts.js";
import { h, ident, nameText, plural, replace, roomLink, scroller, setTitle, status } from "../dom.js";
import { localZone, zoneMode, zoneSwitch } from "../time.js";

const WEEKDAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const ACTIONS = ["warn", "mute", "kick", "ban", "unmute", "unban"];
const RANGES = [1, 2, 4, 8, 12];

function moderationSeries(weekly) {
  return ACTIONS.map((a) => ({ name: a, values: weekly.map((w) => w.moderation[a] || 0) })).filter((x) => x.values.some(Boolean));
}

// A chart, or the reason it has nothing to draw.
function chartOr(empty, why, make) {
  return empty
    ? h("figure", { class: "chart-box" }, h("figcaption", null, why.title), h("p", { class: "status empty-chart" }, why.text))
    : make();
}

function rangeForm(weeks) {
  return h("form", { method: "get", class: "inline range" },
    h("div", null, h("label", { for: "weeks" }, "Range"),
      h("select", { id: "weeks", name: "weeks" },
        RANGES.map((n) => h("option", { value: n, selected: n === weeks }, `Last ${plural(n, "week")}`)))),
    h("button", { type: "submit" }, "Show"));
}

export async function render({ body, room, query }) {
  setTitle("Insights", room);
  const asked = Number(query.get("weeks")) || 4;
  const weeks = Math.min(12, Math.max(1, asked));
  // hours and weekdays in the zone the reader chose (their own, or UTC)
  const tz = zoneMode() === "utc" ? "UTC" : localZone();
  const doc = await api(roomPath(room, "insights"), { params: [["weeks", String(weeks)], ["tz", tz]] });
  const hours = [...Array(24).keys()].map((n) => String(n).padStart(2, "0"));
  const other = doc.hour_of_day.map((n, i) => n - doc.chat_by_hour[i]);
  const days = doc.days.map((d) => d.day.slice(5));
  const weekLabels = doc.weekly.map((w) => w.week_start.slice(5));
  const first = doc.days.length ? doc.days[0].day : null;
  const last = doc.days.length ? doc.days[doc.days.length - 1].day : null;
  const firstActive = doc.days.find((d) => d.total > 0);
  const span = first ? `${first} to ${last}` : `the last ${plural(weeks, "week")}`;
  const notes = [];
  if (doc.total === 0) {
    notes.push(status(`No events of this room are stored for ${span}: nobody entered, chatted or was moderated then, `
      + "or those days were already deleted (retention, or a deletion request). Try a longer range."));
  } else if (firstActive && firstActive.day > first) {
    notes.push(status(`This room's stored history in this range starts on ${firstActive.day}: the days before it have no events, `
      + "so the charts cover less than the range asked.", "warn"));
  }
  const moderation = moderationSeries(doc.weekly);
  const gifts = doc.weekly.map((w) => w.gifts);
  const charts = doc.total === 0 ? [] : [
    barChart({ title: `Activity by hour of day (${doc.tz})`, labels: hours, xTitle: `Hour of day (${doc.tz})`, yTitle: "Events",
      series: [{ name: "chat messages", values: doc.chat_by_hour }, { name: "other events", values: other }] }),
    barChart({ title: `Activity by day of week (${doc.tz})`, labels: WEEKDAYS, xTitle: "Day of week", yTitle: "Events",
      series: [{ name: "events", values: doc.day_of_week }] }),
    chartOr(!doc.days.some((d) => d.entered || d.left),
      { title: "Entries and exits per day", text: `Nobody entered or left the room in ${span}.` },
      () => barChart({ title: "Entries and exits per day", labels: days, grouped: true, xTitle: `Day (${doc.tz}), month-day`, yTitle: "Users",
        series: [{ name: "entries", values: doc.days.map((d) => d.entered) }, { name: "exits", values: doc.days.map((d) => d.left) }] })),
    chartOr(!moderation.length,
      { title: "Moderation actions per week", text: `No warnings, mutes, kicks or bans in ${span}.` },
      () => barChart({ title: "Moderation actions per week", labels: weekLabels, xTitle: "Week starting (month-day)", yTitle: "Actions",
        series: moderation })),
    chartOr(!gifts.some(Boolean),
      { title: "Gifts per week", text: `No gifts were sent in ${span}.` },
      () => barChart({ title: "Gifts per week", labels: weekLabels, xTitle: "Week starting (month-day)", yTitle: "Gifts",
        series: [{ name: "gifts", values: gifts }] })),
  ];
  const top = doc.top_chatters.length
    ? scroller("Top chatters", h("table", { class: "grid chatters" },
      h("caption", null, "Top chatters"),
      h("thead", null, h("tr", null, h("th", { scope: "col" }, "User"), h("th", { scope: "col" }, "Messages"))),
      h("tbody", null, doc.top_chatters.map((c) => h("tr", null,
        h("th", { scope: "row", class: "user" }, h("a", { class: "user", href: roomLink(room, "users", c.user_id) },
          c.display_name ? [nameText(c.display_name), " ", h("span", { class: "uid" }, "(", ident(c.user_id), ")")] : ident(c.user_id))),
        h("td", null, c.messages.toLocaleString("en")))))))
    : doc.total ? status(`Nobody chatted in ${span}.`) : null;
  replace(body,
    h("h2", null, `The last ${plural(weeks, "week")} `, h("span", { class: "muted" }, `(${span}, ${plural(doc.total, "event")})`)),
    rangeForm(weeks),
    zoneSwitch(),
    notes,
    h("div", { class: "charts" }, charts),
    top);
}
