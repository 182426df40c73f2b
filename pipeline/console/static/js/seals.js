// A day's seal as the calendar and the day view show it, and the download of its evidence bundle.
// A sealed day's events are exactly those of its signed tree head: a bundle of the whole day, or of some
// events with their inclusion proofs, verifies offline with `roomlogs verify FILE --key PEM`.

import { ApiError, download, roomPath } from "./api.js";
import { h, plural, replace, status, utcDateTime } from "./dom.js";

// { kind: "sealed" | "open" | "unsealed", text } of a day of GET /v1/rooms/{room}/days.
export function sealState(day) {
  if (day.seal) {
    return { kind: "sealed", text: `Sealed ${utcDateTime(day.seal.sealed_at)} with key ${day.seal.key_id} (${plural(day.seal.events, "event")})` };
  }
  if (Date.parse(day.closes_at) > Date.now()) {
    return { kind: "open", text: `Open until ${utcDateTime(day.closes_at)}, sealed after that` };
  }
  return { kind: "unsealed", text: `No seal yet (closed ${utcDateTime(day.closes_at)}, waiting for the sealing run)` };
}

// A button that downloads the evidence of `day` (all of it, or the events `eventIds`), and says how it went.
export function evidenceButton(room, day, label, eventIds, out) {
  const button = h("button", { type: "button", class: "evidence" }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    replace(out, status("Preparing the evidence bundle…"));
    try {
      const params = [["day", day], ...(eventIds || []).map((id) => ["event_id", id])];
      const name = await download(roomPath(room, "evidence"), params, `roomlogs-evidence-${day}.json`);
      replace(out, status(`Downloaded ${name}.`, "ok"));
    } catch (error) {
      const text = error instanceof ApiError
        ? `${error.message} (${error.code}${error.requestId ? `, request ${error.requestId}` : ""})`
        : `Something went wrong: ${error.message}`;
      replace(out, status(text, "error"));
    } finally {
      button.disabled = false;
    }
  });
  return button;
}
