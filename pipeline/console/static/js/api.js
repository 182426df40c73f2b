// The console's only way to the data: the query API on the same origin, with the session cookie.
// State changes carry the session's CSRF token; errors keep the API's stable code and request id.

let csrfToken = null;

export class ApiError extends Error {
  constructor(status, code, message, requestId) {
    super(message);
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

export function setCsrfToken(token) {
  csrfToken = token;
}

export function roomPath(room, ...rest) {
  return ["/v1/rooms", encodeURIComponent(room), ...rest].join("/");
}

export function withQuery(path, params) {
  const url = new URL(path, location.origin);
  for (const [key, value] of params) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.append(key, value);
  }
  return url.pathname + url.search;
}

export async function api(path, { method = "GET", body, params, headers = {} } = {}) {
  const sent = { Accept: "application/json", ...headers };
  if (method !== "GET" && method !== "HEAD" && csrfToken) sent["X-CSRF-Token"] = csrfToken;
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const response = await fetch(params ? withQuery(path, params) : path, {
    method,
    headers: sent,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
    cache: "no-store",
  });
  if (response.status === 204) return null;
  let doc = null;
  try {
    doc = await response.json();
  } catch {
    doc = null;
  }
  if (!response.ok) {
    const error = (doc && doc.error) || {};
    throw new ApiError(response.status, error.code || "error", error.message || response.statusText,
      error.request_id || response.headers.get("X-Request-Id"));
  }
  return doc;
}

// A file the API answers with (an evidence bundle): its bytes exactly as sent, saved by the browser under
// the name the API gives it. An error answer is thrown as an ApiError, never saved.
export async function download(path, params, fallbackName) {
  const response = await fetch(withQuery(path, params), {
    headers: { Accept: "application/json" },
    credentials: "same-origin",
    cache: "no-store",
  });
  if (!response.ok) {
    let error = {};
    try {
      error = (await response.json()).error || {};
    } catch {
      error = {};
    }
    throw new ApiError(response.status, error.code || "error", error.message || response.statusText,
      error.request_id || response.headers.get("X-Request-Id"));
  }
  const named = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = named ? named[1] : fallbackName;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return link.download;
}
