// One incident: what happened in plain words, who was paged and how it went, every
// alert it absorbed (a page at a time), and acknowledge, resolve, add a note.

import { api, enc } from "./api.js";
import { ago, clock, h, notify, since, timeEl } from "./dom.js";
import { coalesced, subscribe } from "./live.js";
import { channelName, outcomeWords, recipient, sentence } from "./words.js";

const ALERTS_PAGE = 50;

export async function incidentView(container, incidentId) {
  const path = `/incidents/${enc(incidentId)}`;
  let incident = await api("GET", path);
  // Its service's name, for people; the id is what monitors and the API use.
  const service = await api("GET", `/services/${enc(incident.service_id)}`).catch(() => null);
  const heading = h("h1", {});
  const subtitle = h("p", { class: "lead" });
  const facts = h("dl", { class: "facts" });
  const paged = h("div", { class: "table-wrap" });
  const timeline = h("ol", { class: "timeline" });
  const alerts = h("ol", { class: "alerts" });
  const moreAlerts = h("button", { type: "button", class: "secondary" }, "Show older alerts");
  let alertsNext = null;

  const ack = h("button", { type: "button" }, "Acknowledge");
  const resolve = h("button", { type: "button", class: "secondary" }, "Resolve");
  ack.addEventListener("click", () => act(ack, async () => {
    await api("POST", `/services/${enc(incident.service_id)}/ack`, { incident_id: incident.id });
    notify("Acknowledged: escalation stopped.");
  }));
  resolve.addEventListener("click", () => act(resolve, async () => {
    await api("POST", `/services/${enc(incident.service_id)}/healthy`);
    notify(`Resolved: ${incident.service_id} is marked healthy.`);
  }));
  const note = noteForm(async (text) => {
    await api("POST", `${path}/notes`, { text });
    notify("Note added.");
    await refresh();
  });
  const actions = h("div", { class: "actions" }, ack, resolve);

  async function act(button, work) {
    if (button.getAttribute("aria-disabled") === "true") return;
    button.setAttribute("aria-disabled", "true");
    try {
      await work();
      await refresh();
    } catch (error) {
      notify(error.detail || String(error));
    } finally {
      button.removeAttribute("aria-disabled");
    }
  }

  async function refresh() {
    incident = await api("GET", path);
    render();
  }

  function render() {
    heading.replaceChildren(h("span", { class: `badge ${incident.status}` }, incident.status),
      ` ${incident.message}`);
    const name = service && service.name !== incident.service_id ? `${service.name} · ` : "";
    subtitle.replaceChildren(`${name}${incident.service_id} · level ${incident.level}`);
    // How long after it opened: the figure a post-mortem asks for first.
    const after = (iso) => h("span", { class: "why" },
      ` (after ${since(incident.opened_at, Date.parse(iso))})`);
    const acknowledged = incident.acknowledged_at
      ? [incident.acknowledged_by ? `${incident.acknowledged_by}, ` : "",
        timeEl(incident.acknowledged_at), after(incident.acknowledged_at)]
      : "not yet";
    const rows = [
      ["Opened", [timeEl(incident.opened_at),
        incident.status === "resolved" ? "" : [" (", ago(incident.opened_at), " ago)"]]],
      ["Acknowledged", acknowledged],
      ["Resolved", incident.resolved_at
        ? [timeEl(incident.resolved_at), after(incident.resolved_at)] : "not yet"],
      ["Alerts", String(incident.alert_count)],
      ["Service", h("a", { href: `#/services?q=${enc(incident.service_id)}` }, incident.service_id)],
      ["Incident", h("code", {}, incident.id)],
    ];
    facts.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    const focused = document.activeElement;
    ack.hidden = incident.status !== "triggered";
    resolve.hidden = incident.status === "resolved";
    if ((focused === ack && ack.hidden) || (focused === resolve && resolve.hidden)) {
      heading.tabIndex = -1;
      heading.focus();
    }
    const pages = new Map(incident.notifications.map((n) => [n.id, n]));
    paged.replaceChildren(pagedTable(incident.notifications));
    timeline.replaceChildren(...incident.timeline.map((entry) => h("li", {},
      clock(entry.at), " ", h("span", { class: `event ${entry.type.split(".")[0]}` },
        sentence(entry, pages)))));
  }

  function showAlerts(page, replace) {
    const items = page.map((a) => h("li", {},
      clock(a.at), " ", h("span", { class: "message" }, a.message),
      h("span", { class: "why" },
        [a.source ? ` from ${a.source}` : "", a.alert_id ? ` · id ${a.alert_id}` : ""].join(""))));
    if (replace) alerts.replaceChildren(...items);
    else alerts.append(...items);
  }

  async function firstAlerts() {
    showAlerts(incident.alerts, true);
    alertsNext = incident.alerts_next;
    moreAlerts.hidden = alertsNext === null;
  }

  moreAlerts.addEventListener("click", async () => {
    if (alertsNext === null) return;
    const page = await api("GET", `${path}/alerts?limit=${ALERTS_PAGE}&after=${enc(alertsNext)}`);
    showAlerts(page.alerts, false);
    alertsNext = page.next;
    moreAlerts.hidden = alertsNext === null;
  });

  render();
  firstAlerts();
  container.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← Incidents")),
    heading, subtitle, facts, actions,
    h("h2", {}, "Paged"), paged,
    h("h2", {}, "What happened"), timeline, note,
    h("h2", {}, "Alerts, newest first"), alerts, moreAlerts);

  // Live: this incident's events re-read it (at most twice a second in a storm).
  const again = coalesced(async () => {
    try {
      const before = incident.alert_count;
      await refresh();
      if (incident.alert_count !== before) firstAlerts();
    } catch (error) {
      notify(error.detail || String(error));
    }
  });
  const stop = subscribe((kind, data) => {
    if (kind === "reconnected" || (data && data.incident_id === incident.id)
        || (kind === "service" && data.service_id === incident.service_id)) again();
  });
  return () => {
    stop();
    again.cancel();
  };
}

function pagedTable(notifications) {
  if (notifications.length === 0) return h("p", { class: "empty" }, "Nobody was paged.");
  return h("table", { class: "notifications" },
    h("caption", { class: "visually-hidden" }, "Who was paged, and how it went"),
    h("thead", {}, h("tr", {},
      ["Level", "Who", "How", "Attempts", "Outcome"].map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, notifications.map((n) => h("tr", {},
      h("td", { "data-label": "Level", class: "num" }, String(n.level)),
      h("td", { "data-label": "Who" }, h("span", { class: n.name ? "person" : "masked" }, recipient(n))),
      h("td", { "data-label": "How" }, channelName(n.channel)),
      h("td", { "data-label": "Attempts", class: "num" }, String(n.attempts)),
      h("td", { "data-label": "Outcome" },
        h("span", { class: `badge ${n.status}` }, outcomeWords(n.status)),
        n.last_error ? h("span", { class: "why" }, ` ${n.last_error}`) : "")))));
}

function noteForm(save) {
  const text = h("textarea", { id: "note-text", name: "text", rows: "3", maxlength: "4096",
    required: true, "aria-describedby": "note-error" });
  const error = h("span", { class: "error", id: "note-error" });
  const form = h("form", { class: "note-form", novalidate: true },
    h("label", { for: "note-text" }, "Add a note"), text, error,
    h("button", { type: "submit", class: "secondary" }, "Add note"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    text.removeAttribute("aria-invalid");
    if (!text.value.trim()) {
      error.textContent = "Write something first.";
      text.setAttribute("aria-invalid", "true");
      text.focus();
      return;
    }
    try {
      await save(text.value.trim());
      text.value = "";
    } catch (problem) {
      error.textContent = problem.detail || String(problem);
      text.setAttribute("aria-invalid", "true");
      text.focus();
    }
  });
  return form;
}
