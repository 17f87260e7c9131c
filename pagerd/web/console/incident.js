// One incident: what happened, every notification and its outcome, the timeline.

import { api, enc } from "./api.js";
import { h, mask, notify, poll, since, timeEl } from "./dom.js";
import { POLL_MS } from "./services.js";

// Timeline details that may hold a phone number, address or URL.
const PERSONAL = new Set(["to", "recipient", "phone_number", "address", "url"]);

export async function incidentView(container, incidentId) {
  const path = `/incidents/${enc(incidentId)}`;
  let incident = await api("GET", path);
  const heading = h("h1", {});
  const status = h("p", { class: "updated" });
  const facts = h("dl", { class: "facts" });
  const notifications = h("div", { class: "table-wrap" });
  const timeline = h("ol", { class: "timeline" });
  const ack = h("button", { type: "button" }, "Acknowledge");
  const healthy = h("button", { type: "button", class: "secondary" }, "Mark service healthy");
  const actions = h("div", { class: "actions" }, ack, healthy);

  ack.addEventListener("click", () => act(ack, async () => {
    await api("POST", `/services/${enc(incident.service_id)}/ack`,
      { incident_id: incident.id, by: "console" });
    notify("Acknowledged: escalation stopped.");
  }));
  healthy.addEventListener("click", () => act(healthy, async () => {
    await api("POST", `/services/${enc(incident.service_id)}/healthy`);
    notify(`${incident.service_id} is healthy; the incident is resolved.`);
  }));

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
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    status.classList.remove("stale");
  }

  function render() {
    heading.replaceChildren(`Incident on ${incident.service_id}`);
    const rows = [
      ["Alert", incident.message],
      ["Status", h("span", { class: `badge ${incident.status}` }, incident.status)],
      ["Level", String(incident.level)],
      ["Opened", [timeEl(incident.opened_at),
        incident.status === "resolved" ? "" : ` (${since(incident.opened_at)} ago)`]],
      ["Acknowledged", incident.acknowledged_at
        ? [timeEl(incident.acknowledged_at), incident.acknowledged_by ? ` by ${incident.acknowledged_by}` : ""]
        : "—"],
      ["Resolved", incident.resolved_at ? timeEl(incident.resolved_at) : "—"],
      ["Alerts", String(incident.alert_count)],
      ["Service", h("a", { href: "#/" }, incident.service_id)],
      ["Incident id", h("code", {}, incident.id)],
    ];
    facts.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
    const focused = document.activeElement;
    ack.hidden = incident.status !== "triggered";
    healthy.hidden = incident.status === "resolved";
    if ((focused === ack && ack.hidden) || (focused === healthy && healthy.hidden)) {
      heading.tabIndex = -1;
      heading.focus();
    }
    notifications.replaceChildren(notificationTable(incident.notifications));
    timeline.replaceChildren(...incident.timeline.map(timelineItem));
  }

  function onError(error) {
    status.textContent = `Not updated: ${error.detail || error}`;
    status.classList.add("stale");
  }

  render();
  container.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← Services")),
    h("div", { class: "heading" }, heading, status),
    facts, actions,
    h("h2", {}, "Notifications"), notifications,
    h("h2", {}, "Timeline"), timeline);
  return poll(refresh, POLL_MS, onError);
}

function notificationTable(notifications) {
  if (notifications.length === 0) return h("p", { class: "empty" }, "No notifications.");
  return h("table", { class: "notifications" },
    h("thead", {}, h("tr", {},
      ["Level", "Channel", "Recipient", "Attempts", "Outcome"]
        .map((name) => h("th", { scope: "col" }, name)))),
    h("tbody", {}, notifications.map((n) => h("tr", {},
      h("td", { "data-label": "Level", class: "num" }, String(n.level)),
      h("td", { "data-label": "Channel" }, n.channel),
      h("td", { "data-label": "Recipient" }, h("span", { class: "masked" }, mask(n.to, n.channel))),
      h("td", { "data-label": "Attempts", class: "num" }, String(n.attempts)),
      h("td", { "data-label": "Outcome" },
        h("span", { class: `badge ${n.status}` }, n.status),
        n.last_error ? h("span", { class: "why" }, ` ${n.last_error}`) : "")))));
}

function timelineItem(entry) {
  const details = Object.entries(entry.detail || {})
    .filter(([k, v]) => v !== null && v !== "" && typeof v !== "object" &&
      !(k === "bundled_with" && v === 0))
    .map(([k, v]) => `${k.replaceAll("_", " ")}: ${PERSONAL.has(k) ? mask(String(v)) : v}`);
  return h("li", {},
    timeEl(entry.at), " ",
    h("strong", {}, entry.type),
    details.length ? h("span", { class: "detail" }, ` — ${details.join(", ")}`) : "");
}
