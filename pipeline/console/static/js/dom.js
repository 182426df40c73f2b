// Building the page: elements and text nodes only. Nothing the API returns is ever parsed as HTML
// (no HTML-parsing DOM property or method is used anywhere): chat text, names and reasons are text, whatever they contain.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  add(el, children);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  add(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.setAttribute("class", value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

export function add(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function replace(el, ...children) {
  el.replaceChildren();
  return add(el, children);
}

export function consolePath(...parts) {
  return "/console/" + parts.map((p) => encodeURIComponent(p)).join("/");
}

export function roomLink(room, ...rest) {
  return consolePath("rooms", room, ...rest);
}

export function pad(n) {
  return String(n).padStart(2, "0");
}

export function utcDate(iso) {
  return iso.slice(0, 10);
}

export function utcTime(iso) {
  return iso.slice(11, 19);
}

export function utcDateTime(iso) {
  return iso ? `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC` : "—";
}

export function addDays(day, n) {
  const d = new Date(day + "T00:00:00Z");
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

export function todayUtc() {
  return new Date().toISOString().slice(0, 10);
}

export function plural(n, word) {
  return `${n.toLocaleString("en")} ${word}${n === 1 ? "" : "s"}`;
}

// An identifier (user, room, event, request id): never broken mid-id, ellipsized when it does not fit,
// the whole value on hover; isolated for bidirectional text like anything a user chose.
export function ident(value, cls = null) {
  return h("bdi", { class: cls ? `id ${cls}` : "id", title: value, translate: "no" }, value);
}

// Text a user chose (a display name, a ticket id): isolated for bidirectional text, so an override in it
// cannot reorder what is drawn after it; ellipsized when too long, the whole value on hover.
export function nameText(value, cls = null) {
  return h("bdi", { class: cls ? `name ${cls}` : "name", title: value }, value);
}

export function status(text, kind = "info") {
  return h("p", { class: `status ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// A table that may scroll sideways on a narrow screen: a labelled region keyboard users can scroll too.
export function scroller(label, table) {
  return h("div", { class: "scroll", tabindex: "0", role: "region", "aria-label": label }, table);
}

export function setTitle(...parts) {
  document.title = [...parts, "Room console"].join(" · ");
}
