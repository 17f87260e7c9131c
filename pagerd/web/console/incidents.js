// Incidents, the console's home: the open ones first (live, with bulk acknowledge), then
// history, filtered by status, service and time, newest first, a page at a time.

import { api, enc } from "./api.js";
import { ago, h, notify, since, timeEl, uid } from "./dom.js";
import { coalesced, subscribe } from "./live.js";

const PAGE = 50;
const RANGES = [
  ["", "Any time"],
  ["24h", "Last 24 hours"],
  ["7d", "Last 7 days"],
  ["30d", "Last 30 days"],
];
const RANGE_MS = { "24h": 864e5, "7d": 7 * 864e5, "30d": 30 * 864e5 };
// The history is of resolved incidents unless asked otherwise: the open ones are above.
const STATUSES = [
  ["resolved", "Resolved"],
  ["any", "Any status"],
  ["triggered", "Triggered"],
  ["acknowledged", "Acknowledged"],
];

/** The filters of the history in the URL (#/?status=&service=&range=). */
function filtersOf(hash) {
  const params = new URLSearchParams(hash.split("?")[1] || "");
  return {
    status: params.get("status") || "resolved",
    service: params.get("service") || "",
    range: params.get("range") || "",
  };
}

function historyQuery(filters, cursor) {
  const params = new URLSearchParams({ limit: String(PAGE) });
  if (filters.status !== "any") params.set("status", filters.status);
  if (filters.service) params.set("service_id", filters.service);
  if (RANGE_MS[filters.range]) {
    params.set("since", new Date(Date.now() - RANGE_MS[filters.range]).toISOString());
  }
  if (cursor) params.set("after", cursor);
  return `/incidents?${params}`;
}

export async function incidentsView(container) {
  const filters = filtersOf(location.hash);
  const open = openList();
  const history = historyList(filters);
  await Promise.all([open.load(), history.load()]);
  container.append(
    h("h1", {}, "Incidents"),
    open.section,
    history.section);
  const again = coalesced(() => open.load().catch((error) => notify(error.detail || String(error))));
  const stop = subscribe((kind, data) => {
    if (kind === "reconnected" || kind === "service"
        || (kind === "timeline" && data.type.startsWith("incident."))) again();
  });
  return () => {
    stop();
    again.cancel();
  };
}

function openList() {
  const body = h("tbody");
  const table = h("table", { class: "incidents" },
    h("caption", { class: "visually-hidden" }, "Open incidents, newest first"),
    header(true), body);
  const empty = h("p", { class: "empty all-clear" }, "No open incidents. All quiet.");
  const count = h("span", { class: "count" });
  const selected = new Set();
  const ackSelected = h("button", { type: "button", class: "ack-selected" });
  const selectAll = h("input", { type: "checkbox", id: uid("all") });
  const more = h("button", { type: "button", class: "secondary" }, "Show more open incidents");
  const bulk = h("div", { class: "bulk" },
    h("label", { for: selectAll.id, class: "check" }, selectAll, " All triggered"), ackSelected);
  let next = null;
  let shown = [];

  function updateBulk() {
    for (const id of [...selected]) {
      if (!shown.some((i) => i.id === id && i.status === "triggered")) selected.delete(id);
    }
    ackSelected.textContent = selected.size
      ? `Acknowledge ${selected.size} selected` : "Acknowledge selected";
    ackSelected.setAttribute("aria-disabled", selected.size ? "false" : "true");
    const triggered = shown.filter((i) => i.status === "triggered");
    selectAll.checked = triggered.length > 0 && triggered.every((i) => selected.has(i.id));
    bulk.hidden = triggered.length === 0; // nothing to acknowledge: nothing to offer
  }

  function render(incidents, append) {
    shown = append ? [...shown, ...incidents] : incidents;
    body.replaceChildren(...shown.map((incident) => row(incident, {
      selected: selected.has(incident.id),
      onSelect: (on) => {
        if (on) selected.add(incident.id);
        else selected.delete(incident.id);
        updateBulk();
      },
    })));
    table.hidden = shown.length === 0;
    empty.hidden = shown.length > 0;
    more.hidden = next === null;
    count.textContent = shown.length ? ` (${shown.length}${next ? "+" : ""})` : "";
    updateBulk();
  }

  async function load() {
    // Keeps as many rows as were shown: a live update does not fold the list back.
    const want = Math.max(PAGE, shown.length);
    const page = await api("GET", `/incidents?status=open&limit=${Math.min(want, 1000)}`);
    next = page.next;
    render(page.incidents, false);
  }

  more.addEventListener("click", async () => {
    if (!next) return;
    const page = await api("GET", `/incidents?status=open&limit=${PAGE}&after=${enc(next)}`);
    next = page.next;
    render(page.incidents, true);
  });
  selectAll.addEventListener("change", () => {
    for (const incident of shown) {
      if (incident.status === "triggered") {
        if (selectAll.checked) selected.add(incident.id);
        else selected.delete(incident.id);
      }
    }
    render(shown, false);
  });
  ackSelected.addEventListener("click", async () => {
    if (!selected.size || ackSelected.getAttribute("aria-busy") === "true") return;
    ackSelected.setAttribute("aria-busy", "true");
    const chosen = shown.filter((i) => selected.has(i.id));
    const results = await Promise.allSettled(chosen.map((i) =>
      api("POST", `/services/${enc(i.service_id)}/ack`, { incident_id: i.id })));
    const failed = results.map((r, n) => [r, chosen[n]]).filter(([r]) => r.status === "rejected");
    selected.clear();
    ackSelected.removeAttribute("aria-busy");
    const done = chosen.length - failed.length;
    notify(failed.length
      ? `Acknowledged ${done} of ${chosen.length}; not ${failed.map(([r, i]) => `${i.service_id} (${r.reason.detail || r.reason})`).join(", ")}.`
      : `Acknowledged ${done} incident${done === 1 ? "" : "s"}: escalation stopped.`);
    await load();
  });

  const section = h("section", { "aria-labelledby": "open-heading" },
    h("div", { class: "heading" }, h("h2", { id: "open-heading" }, "Open", count), bulk),
    empty, h("div", { class: "table-wrap" }, table), more);
  return { section, load };
}

function historyList(filters) {
  const body = h("tbody");
  const table = h("table", { class: "incidents" },
    h("caption", { class: "visually-hidden" }, "Incidents, newest first"), header(false), body);
  const empty = h("p", { class: "empty" }, "No incidents match.");
  const more = h("button", { type: "button", class: "secondary" }, "Show older incidents");
  let next = null;

  function show(incidents, append) {
    const rows = incidents.map((incident) => row(incident, null));
    if (append) body.append(...rows);
    else body.replaceChildren(...rows);
    table.hidden = body.children.length === 0;
    empty.hidden = body.children.length > 0;
    more.hidden = next === null;
  }

  async function load() {
    const page = await api("GET", historyQuery(filters, null));
    next = page.next;
    show(page.incidents, false);
  }

  more.addEventListener("click", async () => {
    if (!next) return;
    const page = await api("GET", historyQuery(filters, next));
    next = page.next;
    show(page.incidents, true);
  });

  const status = select("Status", "status", STATUSES, filters.status);
  const range = select("Opened", "range", RANGES, filters.range);
  const serviceId = uid("service");
  const service = h("input", { id: serviceId, name: "service", value: filters.service,
    autocomplete: "off", placeholder: "any service" });
  const form = h("form", { class: "filters", "aria-label": "Filter the history" },
    status.wrap, h("div", { class: "field" }, h("label", { for: serviceId }, "Service id"), service),
    range.wrap, h("button", { type: "submit", class: "secondary" }, "Filter"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const params = new URLSearchParams();
    if (status.input.value !== "resolved") params.set("status", status.input.value);
    if (service.value.trim()) params.set("service", service.value.trim());
    if (range.input.value) params.set("range", range.input.value);
    const query = params.toString();
    location.hash = query ? `#/?${query}` : "#/";
  });

  const section = h("section", { "aria-labelledby": "history-heading" },
    h("h2", { id: "history-heading" }, "History"), form, empty,
    h("div", { class: "table-wrap" }, table), more);
  return { section, load };
}

function select(label, name, options, value) {
  const id = uid(name);
  const input = h("select", { id, name }, options.map(([v, text]) =>
    h("option", { value: v, selected: v === value }, text)));
  return { wrap: h("div", { class: "field" }, h("label", { for: id }, label), input), input };
}

function header(withSelect) {
  const names = ["Status", "Service", "What", "Level", "Opened", "Acknowledged"];
  return h("thead", {}, h("tr", {},
    withSelect ? h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Select")) : null,
    names.map((name) => h("th", { scope: "col" }, name))));
}

function row(incident, selection) {
  const link = h("a", { href: `#/incidents/${enc(incident.id)}` }, incident.message);
  const acknowledged = incident.acknowledged_at
    ? [incident.acknowledged_by || "someone", " ", h("span", { class: "why" },
      timeEl(incident.acknowledged_at))]
    : incident.status === "triggered" ? h("span", { class: "nobody" }, "nobody yet") : "—";
  const cells = [
    h("td", { "data-label": "Status" }, h("span", { class: `badge ${incident.status}` }, incident.status)),
    h("td", { "data-label": "Service", class: "service" }, incident.service_id),
    h("th", { scope: "row", "data-label": "What" }, link,
      incident.alert_count > 1 ? h("span", { class: "why" }, ` · ${incident.alert_count} alerts`) : ""),
    h("td", { "data-label": "Level", class: "num" }, String(incident.level)),
    h("td", { "data-label": "Opened" }, timeEl(incident.opened_at),
      incident.status === "resolved"
        ? h("span", { class: "why" }, ` · lasted ${since(incident.opened_at, Date.parse(incident.resolved_at))}`)
        : h("span", { class: "why" }, " ", ago(incident.opened_at), " ago")),
    h("td", { "data-label": "Acknowledged" }, acknowledged),
  ];
  if (selection) {
    const box = h("input", { type: "checkbox", checked: selection.selected,
      "aria-label": `Select ${incident.service_id}: ${incident.message}` });
    box.disabled = incident.status !== "triggered";
    box.addEventListener("change", () => selection.onSelect(box.checked));
    cells.unshift(h("td", { class: "select" }, box));
  }
  return h("tr", { class: incident.status, "data-incident": incident.id }, cells);
}
