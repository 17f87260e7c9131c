// Services: health, open incident, level, time since triggered; acknowledge and mark healthy.
// Polls the API and updates rows in place, so a focused button keeps its focus.

import { ApiError, api, enc } from "./api.js";
import { field, h, notify, poll, setError, since } from "./dom.js";

export const POLL_MS = 2000;

export async function servicesView(container) {
  const status = h("p", { class: "updated", "aria-live": "off" });
  const summary = h("p", { class: "summary" });
  const body = h("tbody");
  const table = h("table", { class: "services" },
    h("caption", { class: "visually-hidden" }, "Services, unhealthy first"),
    h("thead", {}, h("tr", {},
      ["Service", "Health", "Incident", "Level", "Since triggered", "Actions"]
        .map((name) => h("th", { scope: "col" }, name)))),
    body);
  const empty = h("p", { class: "empty", hidden: true },
    "No services yet. Add one below, or declare them in pagerd.toml.");
  const rows = new Map();
  let messages = new Map();

  async function refresh() {
    const [services, triggered, acknowledged] = await Promise.all([
      api("GET", "/services"),
      api("GET", "/incidents?status=triggered&limit=1000"),
      api("GET", "/incidents?status=acknowledged&limit=1000"),
    ]);
    messages = new Map(
      [...triggered.incidents, ...acknowledged.incidents].map((i) => [i.id, i.message]));
    show(services.services);
    status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    status.classList.remove("stale");
  }

  function show(services) {
    services.sort((a, b) =>
      (a.health === b.health ? 0 : a.health === "unhealthy" ? -1 : 1) || a.id.localeCompare(b.id));
    const seen = new Set();
    const active = document.activeElement;
    services.forEach((service, index) => {
      seen.add(service.id);
      let row = rows.get(service.id);
      if (!row) {
        row = makeRow(service, refreshSoon);
        rows.set(service.id, row);
      }
      row.update(service, messages);
      if (body.children[index] !== row.tr) body.insertBefore(row.tr, body.children[index] || null);
    });
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    // Moving a row blurs the button in it; give the focus back.
    if (active && active.isConnected && document.activeElement !== active) active.focus();
    const open = services.filter((s) => s.health === "unhealthy").length;
    summary.textContent = `${services.length} services, ${open} unhealthy`;
    empty.hidden = services.length > 0;
    table.hidden = services.length === 0;
  }

  function refreshSoon() {
    refresh().catch(onError);
  }

  function onError(error) {
    status.textContent = `Not updated: ${error.detail || error}`;
    status.classList.add("stale");
  }

  await refresh();
  container.append(
    h("div", { class: "heading" }, h("h1", {}, "Services"), status),
    summary, empty, h("div", { class: "table-wrap" }, table),
    await serviceForm(refreshSoon));
  return poll(refresh, POLL_MS, onError);
}

function makeRow(service, changed) {
  const name = h("span", { class: "name" });
  const id = h("span", { class: "id" });
  const health = h("span", { class: "badge" });
  const incident = h("td", { "data-label": "Incident" });
  const level = h("td", { "data-label": "Level", class: "num" });
  const age = h("td", { "data-label": "Since triggered" });
  const ack = h("button", { type: "button", class: "ack" }, "Acknowledge");
  const healthy = h("button", { type: "button", class: "healthy secondary" }, "Mark healthy");
  const rowHead = h("th", { scope: "row", "data-label": "Service", tabindex: "-1" }, name, id);
  const tr = h("tr", { "data-service": service.id },
    rowHead,
    h("td", { "data-label": "Health" }, health),
    incident, level, age,
    h("td", { class: "actions" }, ack, healthy));
  let current = service;

  ack.addEventListener("click", () => act(ack, "Acknowledging…", async () => {
    const body = { by: "console" };
    if (current.incident) body.incident_id = current.incident.id;
    await api("POST", `/services/${enc(current.id)}/ack`, body);
    notify(`Acknowledged ${current.name}: escalation stopped.`);
  }));
  healthy.addEventListener("click", () => act(healthy, "Marking healthy…", async () => {
    const answer = await api("POST", `/services/${enc(current.id)}/healthy`);
    notify(answer.resolved_incident_id
      ? `${current.name} is healthy; incident ${answer.resolved_incident_id} resolved.`
      : `${current.name} is healthy.`);
  }));

  async function act(button, busy, work) {
    // aria-disabled, not disabled: a disabled button would drop the keyboard focus.
    if (button.getAttribute("aria-disabled") === "true") return;
    const label = button.textContent;
    button.setAttribute("aria-disabled", "true");
    button.textContent = busy;
    try {
      await work();
    } catch (error) {
      notify(`${current.name}: ${error.detail || error}`);
    } finally {
      button.textContent = label;
      button.removeAttribute("aria-disabled");
      changed();
    }
  }

  function update(service, messages) {
    current = service;
    name.textContent = service.name;
    id.textContent = service.name === service.id ? "" : service.id;
    const open = service.incident;
    health.textContent = service.health;
    health.className = `badge ${service.health}`;
    tr.classList.toggle("unhealthy", service.health === "unhealthy");
    if (open) {
      const message = messages.get(open.id) || "";
      incident.replaceChildren(
        h("a", { href: `#/incidents/${enc(open.id)}` },
          h("span", { class: `badge ${open.status}` }, open.status),
          " ", message || open.id));
      level.textContent = String(open.level);
      age.replaceChildren(h("time", { datetime: open.opened_at }, since(open.opened_at)));
    } else {
      incident.textContent = "—";
      level.textContent = "—";
      age.textContent = "—";
    }
    const focused = document.activeElement;
    ack.hidden = !(open && open.status === "triggered");
    healthy.hidden = service.health !== "unhealthy";
    // A button that just did its work disappears; keep the keyboard user in this row.
    if (focused === ack && ack.hidden) (healthy.hidden ? rowHead : healthy).focus();
    if (focused === healthy && healthy.hidden) rowHead.focus();
    ack.setAttribute("aria-label", `Acknowledge ${service.name}`);
    healthy.setAttribute("aria-label", `Mark ${service.name} healthy`);
  }

  return { tr, update };
}

async function serviceForm(changed) {
  const { policies } = await api("GET", "/policies");
  const id = field("Service id", { name: "id", required: true, autocomplete: "off",
    pattern: "[A-Za-z0-9._\\-]{1,128}" }, { hint: "Letters, digits, . _ -; up to 128." });
  const name = field("Name", { name: "name", autocomplete: "off" }, { hint: "Optional." });
  const policy = field("Escalation policy", { name: "policy_id" }, {
    control: "select",
    options: policies.map((p) => [p.id, p.id]),
  });
  const problem = h("p", { class: "problem", role: "alert", hidden: true });
  const form = h("form", { class: "card", novalidate: true },
    h("h2", {}, "Add or change a service"),
    h("p", { class: "hint" }, "Monitors alert a service by its id, e.g. over MQTT on pagerd/alert/<id>."),
    problem,
    h("div", { class: "row" }, id.wrap, name.wrap, policy.wrap),
    h("button", { type: "submit" }, "Save service"));
  if (policies.length === 0) {
    policy.input.disabled = true;
    problem.hidden = false;
    problem.textContent = "Create an escalation policy first (Policies).";
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const f of [id, name, policy]) setError(f, "");
    problem.hidden = true;
    const body = { policy_id: policy.input.value };
    if (name.input.value.trim()) body.name = name.input.value.trim();
    const sid = id.input.value.trim();
    if (!sid) {
      setError(id, "is required");
      id.input.focus();
      return;
    }
    try {
      const saved = await api("PUT", `/services/${enc(sid)}`, body);
      notify(`Service ${saved.id} saved.`);
      form.reset();
      changed();
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      const fields = { id, name, policy_id: policy };
      let shown = false;
      for (const e of error.errors) {
        const f = fields[e.field];
        if (f) {
          setError(f, e.problem);
          shown = true;
        }
      }
      if (!shown) {
        problem.hidden = false;
        problem.textContent = error.detail;
      }
    }
  });
  return form;
}
