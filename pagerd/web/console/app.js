// The console's shell: sign-in, navigation by URL fragment, one view at a time.

import { ApiError, SIGNED_OUT, signIn, signOut } from "./api.js";
import { field, h, notify, setError } from "./dom.js";
import { incidentView } from "./incident.js";
import { policiesView, policyView } from "./policies.js";
import { servicesView } from "./services.js";
import { teamsView } from "./teams.js";

const ROUTES = [
  [/^#?\/?$/, servicesView, "services"],
  [/^#\/incidents\/([^/]+)$/, incidentView, "services"],
  [/^#\/policies$/, policiesView, "policies"],
  [/^#\/policies\/([^/]+)$/, policyView, "policies"],
  [/^#\/teams$/, teamsView, "teams"],
];

let stopView = null;
let showingSignIn = false;

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
}

async function route() {
  leaveView();
  showingSignIn = false;
  const hash = location.hash || "#/";
  const found = ROUTES.map(([re, view, section]) => [hash.match(re), view, section])
    .find(([m]) => m);
  for (const link of document.querySelectorAll("#nav a")) {
    const current = found && link.getAttribute("href") === `#/${found[2] === "services" ? "" : found[2]}`;
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const container = h("div", { class: "page" });
  root().append(container);
  if (!found) {
    container.append(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to services")));
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
  const token = field("API token", {
    type: "password", name: "token", autocomplete: "current-password", required: true,
  }, { hint: "One of the tokens in [http] tokens of pagerd.toml." });
  const form = h("form", { class: "card narrow", method: "post", action: "/console/sign-in" },
    h("h1", {}, "Sign in"),
    message ? h("p", {}, message) : null,
    token.wrap,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setError(token, "");
    try {
      await signIn(token.input.value);
    } catch (error) {
      setError(token, error instanceof ApiError ? error.detail.replace(/^token: /, "") : String(error));
      token.input.focus();
      return;
    }
    token.input.value = "";
    notify("Signed in.");
    route();
  });
  root().append(form);
  token.input.focus();
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

window.addEventListener(SIGNED_OUT, () => showSignIn());
window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-out").addEventListener("click", doSignOut);
  route();
});
