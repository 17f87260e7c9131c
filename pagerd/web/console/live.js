// Live updates: one EventSource on /api/v1/events for the whole console, shared by views.
// Views subscribe to "service" events (a service's health and open incident) and
// "timeline" events (an incident's events); they re-read nothing on a timer.

const listeners = new Set();
let source = null;
let state = "closed"; // closed | connecting | open
let openedBefore = false;
const stateListeners = new Set();

function setState(next) {
  state = next;
  for (const listener of stateListeners) listener(state);
}

function dispatch(kind, event) {
  let data;
  try {
    data = JSON.parse(event.data);
  } catch {
    return;
  }
  for (const listener of listeners) listener(kind, data);
}

/** Open the stream (once signed in); EventSource reconnects by itself after a drop. */
export function connect() {
  if (source) return;
  source = new EventSource("/api/v1/events");
  setState("connecting");
  source.addEventListener("open", () => {
    setState("open");
    // Whatever happened while the stream was down: views read their lists afresh.
    if (openedBefore) for (const listener of listeners) listener("reconnected", null);
    openedBefore = true;
  });
  source.addEventListener("error", () => {
    // CLOSED: refused (signed out); else the browser is already reconnecting.
    setState(source && source.readyState === EventSource.CLOSED ? "closed" : "connecting");
  });
  source.addEventListener("service", (event) => dispatch("service", event));
  source.addEventListener("timeline", (event) => dispatch("timeline", event));
  source.addEventListener("oncall", (event) => dispatch("oncall", event));
}

/** Close the stream (signed out). */
export function disconnect() {
  if (source) source.close();
  source = null;
  openedBefore = false;
  setState("closed");
}

/** Call listener(kind, data) for each event; kind is "service", "timeline", "oncall"
 *  or "reconnected" (data null). Returns unsubscribe(). */
export function subscribe(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** Call listener(state) now and on each change of the connection. Returns unsubscribe(). */
export function watchState(listener) {
  stateListeners.add(listener);
  listener(state);
  return () => stateListeners.delete(listener);
}

/** A function that calls fn ms after it is first called, once for all the calls made
 *  meanwhile: in an alert storm, a list is read again at most once per ms. */
export function coalesced(fn, ms = 500) {
  let timer = null;
  const call = () => {
    if (timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      fn();
    }, ms);
  };
  call.cancel = () => {
    clearTimeout(timer);
    timer = null;
  };
  return call;
}
