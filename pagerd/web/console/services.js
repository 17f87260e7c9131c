// Services, a page at a time, unhealthy first, with search; rows change live as the
// stream says, so a million services cost one page. Acknowledge, mark healthy, and
// start or end maintenance where the API offers it.

import { ApiError, api, enc } from "./api.js";
import { ago, field, h, notify, setError, uid } from "./dom.js";
import { coalesced, subscribe } from "./live.js";

const PAGE = 50;
const MAX_PAGE = 1000; // the API's largest page

export async function servicesView(container) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  let text = params.get("q") || "";
  const searchId = uid("q");
  const search = h("input", { id: searchId, type: "search", name: "q", value: text,
    autocomplete: "off", placeholder: "id or name", "aria-controls": "services-table" });
  const summary = h("p", { class: "summary", "aria-live": "polite" });
  const body = h("tbody");
  const table = h("table", { class: "services", id: "services-table" },
    h("caption", { class: "visually-hidden" }, "Services, unhealthy first"),
    h("thead", {}, h("tr", {},
      ["Service", "Health", "Incident", "Level", "Since", "Actions"]
        .map((name) => h("th", { scope: "col" }, name)))),
    body);
  const empty = h("p", { class: "empty", hidden: true });
  const more = h("button", { type: "button", class: "secondary" }, "Show more services");
  const rows = new Map();
  let next = null;

  function show(services, append) {
    if (!append) {
      rows.clear();
      body.replaceChildren();
    }
    const active = document.activeElement;
    for (const service of services) {
      const row = makeRow(service, reloadSoon);
      rows.set(service.id, row);
      body.append(row.tr);
    }
    if (active && active.isConnected && document.activeElement !== active) active.focus();
    more.hidden = next === null;
    table.hidden = rows.size === 0;
    empty.hidden = rows.size > 0;
    empty.textContent = text ? `No service has “${text}” in its id or name.`
      : "No services yet. Add one below, or declare them in pagerd.toml.";
    summarize();
  }

  function summarize() {
    const unhealthy = [...rows.values()].filter((r) => r.current().health === "unhealthy").length;
    const matching = text ? ` matching “${text}”` : "";
    summary.textContent = rows.size
      ? `${unhealthy} unhealthy of the ${rows.size}${next ? " shown" : ""}${matching}.`
      : "";
  }

  function query(limit, cursor) {
    const q = new URLSearchParams({ limit: String(limit) });
    if (text) q.set("q", text);
    if (cursor) q.set("after", cursor);
    return `/services?${q}`;
  }

  async function load() {
    // As many as are shown: a live update keeps the list as long as it was.
    const page = await api("GET", query(Math.min(Math.max(PAGE, rows.size), MAX_PAGE)));
    next = page.next;
    show(page.services, false);
  }

  function reloadSoon() {
    load().catch((error) => notify(error.detail || String(error)));
  }

  more.addEventListener("click", async () => {
    if (!next) return;
    const page = await api("GET", query(PAGE, next));
    next = page.next;
    show(page.services, true);
  });
  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      text = search.value.trim();
      history.replaceState(null, "", text ? `#/services?q=${enc(text)}` : "#/services");
      reloadSoon();
    }, 300);
  });

  await load();
  container.append(
    h("div", { class: "heading" }, h("h1", {}, "Services"),
      h("form", { class: "search", role: "search", onsubmit: (e) => e.preventDefault() },
        h("label", { for: searchId }, "Search"), search)),
    summary, empty, h("div", { class: "table-wrap" }, table), more,
    await serviceForm(reloadSoon));

  const again = coalesced(reloadSoon);
  const stop = subscribe((kind, data) => {
    if (kind === "reconnected") {
      again();
    } else if (kind === "service") {
      const row = rows.get(data.service_id);
      if (row) {
        row.update({ ...row.current(), health: data.health, incident: data.incident });
        summarize();
      } else if (data.health === "unhealthy") {
        again(); // it belongs among the first
      }
    }
  });
  return () => {
    stop();
    again.cancel();
    clearTimeout(typing);
  };
}

function makeRow(service, changed) {
  const name = h("span", { class: "name" });
  const id = h("span", { class: "id" });
  const health = h("span", { class: "badge" });
  const state = h("span", { class: "state" });
  const incident = h("td", { "data-label": "Incident" });
  const level = h("td", { "data-label": "Level", class: "num" });
  const age = h("td", { "data-label": "Since" });
  const ack = h("button", { type: "button", class: "ack" }, "Acknowledge");
  const healthy = h("button", { type: "button", class: "healthy secondary" }, "Mark healthy");
  const maintenance = h("button", { type: "button", class: "maintenance quiet" });
  const rowHead = h("th", { scope: "row", "data-label": "Service", tabindex: "-1" }, name, id);
  const tr = h("tr", { "data-service": service.id },
    rowHead,
    h("td", { "data-label": "Health" }, health, state),
    incident, level, age,
    h("td", { class: "actions" }, ack, healthy, maintenance));
  let current = service;

  ack.addEventListener("click", () => act(ack, "Acknowledging…", async () => {
    const body = {};
    if (current.incident) body.incident_id = current.incident.id;
    await api("POST", `/services/${enc(current.id)}/ack`, body);
    notify(`Acknowledged ${current.name}: escalation stopped.`);
  }));
  healthy.addEventListener("click", () => act(healthy, "Marking healthy…", async () => {
    const answer = await api("POST", `/services/${enc(current.id)}/healthy`);
    notify(answer.resolved_incident_id
      ? `${current.name} is healthy; its incident is resolved.`
      : `${current.name} is healthy.`);
  }));
  maintenance.addEventListener("click", () => act(maintenance, "…", async () => {
    const path = `/services/${enc(current.id)}/maintenance`;
    if (current.maintenance) {
      await api("DELETE", path);
      notify(`${current.name}: maintenance ended; alerts page again.`);
    } else {
      const until = new Date(Date.now() + 3600e3).toISOString();
      await api("POST", path, { until, reason: "started in the console" });
      notify(`${current.name}: in maintenance for an hour; its alerts page nobody.`);
    }
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

  function update(next) {
    current = next;
    name.textContent = next.name;
    id.textContent = next.name === next.id ? "" : next.id;
    const open = next.incident;
    health.textContent = next.health;
    health.className = `badge ${next.health}`;
    tr.classList.toggle("unhealthy", next.health === "unhealthy");
    const notes = [];
    if (next.maintenance) notes.push(`in maintenance until ${new Date(next.maintenance.until).toLocaleString()}`);
    if (next.heartbeat_s) notes.push(`beats every ${next.heartbeat_s} s`);
    state.textContent = notes.length ? ` ${notes.join("; ")}` : "";
    if (open) {
      incident.replaceChildren(
        h("a", { href: `#/incidents/${enc(open.id)}` },
          h("span", { class: `badge ${open.status}` }, open.status), " ", open.message || open.id));
      level.textContent = String(open.level);
      age.replaceChildren(ago(open.opened_at));
    } else {
      incident.textContent = "—";
      level.textContent = "—";
      age.textContent = "—";
    }
    const focused = document.activeElement;
    ack.hidden = !(open && open.status === "triggered");
    healthy.hidden = next.health !== "unhealthy";
    // Maintenance is offered where the API shows it (a service's "maintenance" field).
    maintenance.hidden = !("maintenance" in next);
    maintenance.textContent = next.maintenance ? "End maintenance" : "Start maintenance";
    // A button that just did its work disappears; keep the keyboard user in this row.
    if (focused === ack && ack.hidden) (healthy.hidden ? rowHead : healthy).focus();
    if (focused === healthy && healthy.hidden) rowHead.focus();
    ack.setAttribute("aria-label", `Acknowledge ${next.name}`);
    healthy.setAttribute("aria-label", `Mark ${next.name} healthy`);
    maintenance.setAttribute("aria-label", `${maintenance.textContent} of ${next.name}`);
  }

  update(service);
  return { tr, update, current: () => current };
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


