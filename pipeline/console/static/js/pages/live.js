// Live view: the browser's own EventSource on the API's tail. After a drop or the stream's time limit the
// browser reconnects by itself, sending Last-Event-ID, and the API resumes after that event (events it
// may repeat are shown once). A withdrawn right ends the view: `revoked` on the open stream, or a refusal
// on reconnect.

import { roomPath } from "../api.js";
import { h, replace, setTitle } from "../dom.js";
import { eventItem } from "../events.js";
import { zoneSwitch } from "../time.js";
import { alertItem, alertsLink } from "../alerts.js";

const KEEP = 500;

export async function render({ body, room }) {
  setTitle("Live", room);
  const state = h("p", { class: "status info", id: "live-status", role: "status" }, "Connecting…");
  const list = h("ol", { class: "events live", id: "live-events", "aria-label": "Live events", "aria-live": "polite" });
  // alerts the room raises while the view is open (the tail's `alert` frames), newest first, each once
  const alerts = h("ol", { class: "alerts live", id: "live-alerts", "aria-label": "New alerts", "aria-live": "assertive" });
  const alertBox = h("section", { class: "card live-alerts", "aria-labelledby": "live-alerts-title", hidden: true },
    h("h3", { id: "live-alerts-title" }, "New alerts"), alerts,
    h("p", null, h("a", { href: alertsLink(room) }, "All the room's alerts")));
  replace(body, h("h2", null, "Live"), zoneSwitch(), state, alertBox, list);
  const alerted = new Set();
  const showAlert = (message) => {
    const a = JSON.parse(message.data);
    if (alerted.has(a.alert_id)) return;
    alerted.add(a.alert_id);
    alertBox.hidden = false;
    alerts.prepend(alertItem(room, a, { shownDay: a.window_start.slice(0, 10) }));
    while (alerts.children.length > KEEP) alerts.lastElementChild.remove();
  };
  const seen = new Set();
  const source = new EventSource(roomPath(room, "tail"));
  const say = (text, kind = "info") => {
    state.className = `status ${kind}`;
    state.textContent = text;
  };
  source.addEventListener("open", () => say("Connected: new events appear below as they happen."));
  source.addEventListener("event", (message) => {
    const e = JSON.parse(message.data);
    if (seen.has(e.event_id)) return;
    seen.add(e.event_id);
    list.append(eventItem(room, e));
    while (list.children.length > KEEP) {
      seen.delete(list.firstElementChild.dataset.eventId);
      list.firstElementChild.remove();
    }
  });
  source.addEventListener("alert", showAlert);
  source.addEventListener("revoked", () => {
    source.close();
    say("Your access to this room was withdrawn. The live view has stopped.", "error");
  });
  source.addEventListener("end", () => say("Reconnecting…"));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      say("The live view stopped: you may no longer have access to this room, or your session ended.", "error");
    } else {
      say("Connection lost; reconnecting…");
    }
  });
  window.addEventListener("pagehide", () => source.close());
}
