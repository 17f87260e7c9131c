// The console's only way to read and change anything: the JSON API under /api/v1.
// The session cookie authenticates; the browser adds the Origin header pagerd checks.

export const SIGNED_OUT = "pagerd:signed-out";

/** A problem+json answer: status, detail, and for a 422 the field errors. */
export class ApiError extends Error {
  constructor(status, body) {
    const detail = (body && body.detail) || `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.detail = detail;
    this.errors = (body && body.errors) || [];
  }

  /** The problem named for a field path such as "levels[0].ack_timeout_s", or "". */
  at(path) {
    const found = this.errors.find((e) => e.field === path);
    return found ? found.problem : "";
  }
}

async function request(method, url, body) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError(0, { detail: "pagerd did not answer; is it running?" });
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { detail: text.slice(0, 200) };
  }
  if (!response.ok) {
    if (response.status === 401) window.dispatchEvent(new Event(SIGNED_OUT));
    throw new ApiError(response.status, parsed);
  }
  return parsed;
}

/** Call /api/v1{path}; resolves to the decoded body, or throws ApiError. */
export function api(method, path, body) {
  return request(method, `/api/v1${path}`, body);
}

export const enc = encodeURIComponent;

export function signIn(token, name = "") {
  return request("POST", "/console/sign-in", { token, name });
}

export function signOut() {
  return request("POST", "/console/sign-out");
}
