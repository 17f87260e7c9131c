// The console's shell: sign-in, navigation by URL fragment, one view at a time, and the
// one live stream every view listens to.

import { ApiError, SIGNED_OUT, signIn, signOut } from "./api.js";
import { clearNotice, field, h, notify, setError } from "./dom.js";
import { incidentView } from "./incident.js";
import { incidentsView } from "./incidents.js";
import { connect, disconnect, watchState } from "./live.js";
import { oncallView } from "./oncall.js";
import { policiesView, policyView } from "./policies.js";
import { servicesView } from "./services.js";
import { teamsView } from "./teams.js";

// [pattern of the fragment without its ?query, view, section of the navigation]
const ROUTES = [
  [/^#?\/?$/, incidentsView, "incidents"],
  [/^#\/incidents\/([^/]+)$/, incidentView, "incidents"],
  [/^#\/services$/, servicesView, "services"],
  [/^#\/oncall$/, oncallView, "oncall"],
  [/^#\/policies$/, policiesView, "policies"],
  [/^#\/policies\/([^/]+)$/, policyView, "policies"],
  [/^#\/teams$/, teamsView, "teams"],
];

let stopView = null;
let showingSignIn = false;
let lastPath = null;

function root() {
  return document.getElementById("view");
}

function leaveView() {
  if (stopView) stopView();
  stopView = null;
  root().replaceChildren();
}

function setSignedIn(signedIn) {
  document.getElementById("nav").hidden = !signedIn;
  document.getElementById("sign-out").hidden = !signedIn;
  document.getElementById("live").hidden = !signedIn;
  if (signedIn) connect();
  else disconnect();
}

async function route() {
  leaveView();
  showingSignIn = false;
  const hash = location.hash || "#/";
  const path = hash.split("?")[0];
  // A notice is about the page it was given on: another page starts without it.
  if (lastPath !== null && path !== lastPath) clearNotice();
  lastPath = path;
  const found = ROUTES.map(([re, view, section]) => [path.match(re), view, section])
    .find(([m]) => m);
  for (const link of document.querySelectorAll("#nav a")) {
    if (found && link.dataset.section === found[2]) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const container = h("div", { class: "page" });
  root().append(container);
  if (!found) {
    container.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to incidents")));
    return;
  }
  const [match, view] = found;
  const params = match.slice(1).map(decodeURIComponent);
  try {
    const stop = await view(container, ...params);
    if (container.isConnected) stopView = stop || null;
    else if (stop) stop();
  } catch (error) {
    if (showingSignIn || !(error instanceof ApiError) || !container.isConnected) {
      if (!(error instanceof ApiError)) throw error;
      return;
    }
    container.append(h("p", { class: "problem", role: "alert" }, error.detail));
  }
  if (container.isConnected && !showingSignIn) {
    setSignedIn(true);
    const heading = container.querySelector("h1");
    if (heading && document.activeElement === document.body) {
      heading.tabIndex = -1;
      heading.focus({ preventScroll: true });
    }
  }
}

function showSignIn(message = "") {
  if (showingSignIn) return;
  leaveView();
  showingSignIn = true;
  setSignedIn(false);
  const name = field("Your name", {
    name: "name", autocomplete: "name", maxlength: "100",
  }, { hint: "Recorded on what you acknowledge, resolve and note." });
  const token = field("API token", {
    type: "password", name: "token", autocomplete: "current-password", required: true,
  }, { hint: "One of the tokens in [http] tokens of pagerd.toml." });
  name.input.value = localStorage.getItem("pagerd.name") || "";
  const form = h("form", { class: "card narrow", method: "post", action: "/console/sign-in" },
    h("h1", {}, "Sign in"),
    message ? h("p", {}, message) : null,
    name.wrap, token.wrap,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setError(token, "");
    setError(name, "");
    try {
      await signIn(token.input.value, name.input.value.trim());
    } catch (error) {
      const detail = error instanceof ApiError ? error.detail : String(error);
      if (detail.startsWith("name: ")) {
        setError(name, detail.replace(/^name: /, ""));
        name.input.focus();
      } else {
        setError(token, detail.replace(/^token: /, ""));
        token.input.focus();
      }
      return;
    }
    localStorage.setItem("pagerd.name", name.input.value.trim());
    token.input.value = "";
    notify("Signed in.");
    route();
  });
  root().append(form);
  (name.input.value ? token : name).input.focus();
}

async function doSignOut() {
  try {
    await signOut();
  } catch (error) {
    notify(error.detail || String(error));
    return;
  }
  showSignIn("Signed out.");
}

function showLiveState(state) {
  const live = document.getElementById("live");
  live.dataset.state = state;
  live.textContent = state === "open" ? "Live" : state === "connecting" ? "Reconnecting…" : "Offline";
  live.title = state === "open"
    ? "Changes show as they happen"
    : "Not receiving changes: pagerd is not reachable; lists may be out of date";
}

window.addEventListener(SIGNED_OUT, () => showSignIn());
window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-out").addEventListener("click", doSignOut);
  watchState(showLiveState);
  route();
});
