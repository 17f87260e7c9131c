// Small DOM helpers. Text from the API only ever becomes text nodes, never HTML.

let nextId = 0;

/** A fresh element id, for <label for> and aria-describedby. */
export function uid(prefix = "f") {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** h("button", {type: "button", onclick: f}, "Text") builds an element. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "for") el.htmlFor = value;
    else if (key === "value") el.value = value;
    else if (key === "text") el.textContent = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** A labelled input with a place for its error; returns {wrap, input, error}. */
export function field(label, attrs = {}, { hint = "", control = "input", options = [] } = {}) {
  const id = attrs.id || uid();
  const errorId = `${id}-error`;
  const hintId = hint ? `${id}-hint` : null;
  const described = [hintId, errorId].filter(Boolean).join(" ");
  const input =
    control === "select"
      ? h("select", { ...attrs, id, "aria-describedby": described },
          options.map(([value, text]) => h("option", { value }, text)))
      : h("input", { type: "text", ...attrs, id, "aria-describedby": described });
  const error = h("span", { class: "error", id: errorId });
  const wrap = h("div", { class: "field" },
    h("label", { for: id }, label), input,
    hint ? h("span", { class: "hint", id: hintId }, hint) : null, error);
  return { wrap, input, error };
}

/** Show (or clear, with "") the error of a field made by field(). */
export function setError(f, text) {
  f.error.textContent = text;
  if (text) f.input.setAttribute("aria-invalid", "true");
  else f.input.removeAttribute("aria-invalid");
}

/** Partly mask a phone number, address or URL: enough to recognize, not to copy. */
export function mask(value, channel = "") {
  if (channel === "webhook" || /^https?:\/\//.test(value)) {
    try {
      return `${new URL(value).origin}/…`;
    } catch {
      return "*****";
    }
  }
  const at = value.lastIndexOf("@");
  if (at > 0) return `${value[0]}*****${value.slice(at)}`;
  if (value.length > 7) return `${value.slice(0, 4)}*****${value.slice(-3)}`;
  return "*****";
}

/** "3m 12s" since an RFC 3339 time. */
export function since(iso, now = Date.now()) {
  let s = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const hr = Math.floor(s / 3600); s -= hr * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${hr}h`;
  if (hr) return `${hr}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

/** A local, readable time for an RFC 3339 string. */
export function when(iso) {
  // "Thu, Dec 3, 08:17 PM": the weekday says "tonight" or "tomorrow" at a glance; the
  // year only when it is not this one; seconds only in exact() (on hover).
  if (!iso) return "";
  const t = new Date(iso);
  const options = { weekday: "short", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
  if (t.getFullYear() !== new Date().getFullYear()) options.year = "numeric";
  return t.toLocaleString(undefined, options);
}

/** ``iso`` to the second, with its year: what a hover shows. */
export function exact(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(undefined, {
    weekday: "short", year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

/** A <time> element showing ``when(iso)``, to the second on hover. */
export function timeEl(iso) {
  return iso ? h("time", { datetime: iso, title: exact(iso) }, when(iso)) : "";
}

/** A <time> element showing how long ago ``iso`` was ("3m 12s"), kept current by the
 *  ticker below, and the full time on hover. */
export function ago(iso) {
  return h("time", { datetime: iso, "data-ago": "", title: exact(iso) }, since(iso));
}

/** The time of day of ``iso`` ("06:14:56 PM"), with its date when it is not today. */
export function clockText(iso) {
  const t = new Date(iso);
  const today = new Date().toDateString() === t.toDateString();
  return today
    ? t.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" })
    : when(iso);
}

/** A <time> element showing ``clockText(iso)``, the full time on hover. */
export function clock(iso) {
  return h("time", { datetime: iso, title: exact(iso) }, clockText(iso));
}

// Relative times move on by themselves: re-read nothing, just redraw the text.
setInterval(() => {
  for (const el of document.querySelectorAll("time[data-ago]")) {
    el.textContent = since(el.getAttribute("datetime"));
  }
}, 5000);

let noticeTimer = null;

/** Say something in the page's live region (read out by screen readers). */
export function notify(text) {
  const notice = document.getElementById("notice");
  notice.textContent = text;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { notice.textContent = ""; }, 8000);
}

/** Take the notice down (on navigation: it was about the page before). */
export function clearNotice() {
  clearTimeout(noticeTimer);
  document.getElementById("notice").textContent = "";
}
