// A room's alerts: unusual activity the detectors flagged, newest first, for one UTC day or the last weeks,
// filtered by detector, paged with the API's signed cursor. Each alert links to its moment in the day view
// and to the record of each user it names. Read and audited as the room's logs.

import { api, roomPath, withQuery } from "../api.js";
import { h, replace, roomLink, setTitle, status } from "../dom.js";
import { alertList, DETECTORS } from "../alerts.js";
import { zoneSwitch } from "../time.js";

const PAGE = 50;

function filtersOf(query) {
  const day = query.get("day") || "";
  const detector = query.get("detector") || "";
  return {
    day: /^\d{4}-\d{2}-\d{2}$/.test(day) ? day : "",
    detector: DETECTORS.some(([d]) => d === detector) ? detector : "",
  };
}

function filterForm(room, f) {
  return h("form", { class: "filters card", method: "get", action: roomLink(room, "alerts"), "aria-label": "Filter alerts" },
    h("div", { class: "fields" },
      h("div", null, h("label", { for: "alert-day" }, "UTC day"),
        h("input", { id: "alert-day", name: "day", type: "date", value: f.day })),
      h("div", null, h("label", { for: "alert-detector" }, "Detector"),
        h("select", { id: "alert-detector", name: "detector" },
          h("option", { value: "" }, "Any"),
          DETECTORS.map(([name, label]) => h("option", { value: name, selected: f.detector === name }, label))))),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Show alerts"), " ",
      h("a", { href: roomLink(room, "alerts") }, "Clear")));
}

export async function render({ body, room, query }) {
  const f = filtersOf(query);
  const cursor = query.get("cursor") || "";
  setTitle(f.day ? `Alerts of ${f.day}` : "Alerts", room);
  const doc = await api(roomPath(room, "alerts"),
    { params: [["day", f.day], ["detector", f.detector], ["limit", String(PAGE)], ["cursor", cursor]] });
  const kept = [["day", f.day], ["detector", f.detector]].filter(([, v]) => v);
  const here = (extra) => withQuery(roomLink(room, "alerts"), [...kept, ...extra]);
  const span = f.day ? `of ${f.day} (UTC day)` : `since ${doc.since.slice(0, 10)}`;
  replace(body,
    h("h2", null, `Alerts ${span}`),
    h("p", { class: "muted" }, "Unusual activity flagged as it happened: floods, spam waves, raids, moderator abuse, permission churn, gift bursts. ",
      "Each links to its first event in the day view and to the record of each user involved."),
    filterForm(room, f),
    zoneSwitch(),
    doc.alerts.length
      ? alertList(room, doc.alerts, `Alerts ${span}`, { shownDay: f.day || null })
      : status(f.day || f.detector ? "No alerts match." : "No alerts in these weeks."),
    h("nav", { class: "pager", "aria-label": "Pages" },
      cursor ? h("a", { href: here([]) }, "Newest") : null,
      doc.next_cursor ? h("a", { href: here([["cursor", doc.next_cursor]]), rel: "next" }, "Older alerts") : null));
}
