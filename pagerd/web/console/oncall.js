// On call, per team and schedule: who now and until when, the next three hand-overs, and
// the overrides, which can be added and removed (CONTRACT §8).

import { ApiError, api, enc } from "./api.js";
import { field, h, notify, setError, timeEl, when } from "./dom.js";
import { coalesced, subscribe } from "./live.js";

const HANDOVERS = 3;

export async function oncallView(container) {
  // Listening before reading: a hand-over while the view loads is not missed. A reload
  // waits if the engineer is filling in a form here (their next action reloads anyway).
  const again = coalesced(() => {
    if (!container.contains(document.activeElement) || !document.activeElement.form) reload();
  });
  const stop = subscribe((kind) => {
    if (kind === "oncall" || kind === "reconnected") again();
  });
  const leave = () => {
    stop();
    again.cancel();
  };
  try {
    const [{ teams }, { schedules }] = await Promise.all([
      api("GET", "/teams"), api("GET", "/schedules")]);
    const sections = await Promise.all(teams.map(async (team) => teamSection(
      team, schedules.filter((s) => s.team_id === team.team.id))));
    // h() flattens arrays and skips nulls; the DOM's own append would print them.
    container.append(h("div", {},
      h("h1", {}, "On call"),
      teams.length ? sections : h("p", { class: "empty" }, "No teams yet.")));
  } catch (error) {
    leave();
    throw error;
  }
  return leave;
}

function reload() {
  window.dispatchEvent(new HashChangeEvent("hashchange"));
}

async function teamSection({ team, developers, next_developer_id: nextId }, schedules) {
  const names = new Map(developers.map((d) => [d.id, d.name]));
  const next = developers.find((d) => d.id === nextId);
  const cards = await Promise.all(schedules.map((schedule) => scheduleCard(schedule, names, developers)));
  return h("section", { class: "team", "aria-labelledby": `team-${team.id}` },
    h("h2", { id: `team-${team.id}` }, team.name),
    h("p", { class: "hint" }, next
      ? `Alerts to the team itself (not to a schedule) page its rotation's next developer: ${next.name}.`
      : "The team has no developers."),
    cards.length ? h("ul", { class: "cards" }, cards) : null);
}

/** Who is on call now and the next ``count`` hand-overs: [{developer, from, until}].
 *  An override that ends where the same developer's shift goes on is no hand-over: the
 *  turns of one developer in a row are one turn. */
async function turns(scheduleId, count) {
  const found = [];
  let at = null;
  // Each answer is one span; a few more than ``count`` allow for spans that join.
  for (let asked = 0; asked <= count + 4 && found.length <= count; asked += 1) {
    const query = at ? `?at=${enc(at)}` : "";
    const answer = await api("GET", `/schedules/${enc(scheduleId)}/oncall${query}`);
    const last = found[found.length - 1];
    if (last && developerId(last) === developerId(answer)) last.until = answer.until;
    else found.push({ developer: answer.developer, from: at, until: answer.until });
    if (!answer.until) break;
    // Times are answered to the millisecond; an override may end within one (set to the
    // microsecond through the API): a span that ends where it was asked goes on 1 ms on.
    at = !at || Date.parse(answer.until) > Date.parse(at) ? answer.until
      : new Date(Date.parse(answer.until) + 1).toISOString();
  }
  return found.slice(0, count + 1);
}

function developerId(turn) {
  return turn.developer ? turn.developer.id : null;
}

async function scheduleCard(schedule, names, developers) {
  const [now, ...later] = await turns(schedule.id, HANDOVERS);
  const who = (turn) => (turn.developer ? turn.developer.name : "nobody");
  const until = (turn) => (turn.until ? ["until ", timeEl(turn.until)] : "until further notice");
  const card = h("li", { class: "card schedule", "data-schedule": schedule.id },
    h("h3", {}, schedule.id, h("span", { class: "why" },
      ` · shifts follow ${schedule.time_zone} time; times here are yours`)),
    h("p", { class: "now" }, h("strong", {}, who(now)), " is on call now, ", until(now), "."),
    later.length ? h("div", {}, h("h4", {}, "Next hand-overs"),
      h("ol", { class: "handovers" }, later.map((turn) =>
        h("li", {}, h("strong", {}, who(turn)), " from ", timeEl(turn.from), ", ", until(turn))))) : null,
    h("h4", {}, "Overrides"),
    schedule.overrides.length
      ? h("ul", { class: "overrides" }, schedule.overrides.map((o) => overrideItem(schedule, o, names)))
      : h("p", { class: "empty overrides-none" }, "None."),
    overrideForm(schedule, developers));
  return card;
}

function overrideItem(schedule, override, names) {
  const name = names.get(override.developer_id) || `developer ${override.developer_id}`;
  const remove = h("button", { type: "button", class: "quiet",
    "aria-label": `Remove the override of ${name} from ${when(override.start)}` }, "Remove");
  remove.addEventListener("click", async () => {
    try {
      await api("DELETE", `/schedules/${enc(schedule.id)}/overrides/${enc(override.id)}`);
    } catch (error) {
      notify(error.detail || String(error));
      return;
    }
    notify(`Override of ${name} removed.`);
    reload();
  });
  return h("li", {}, h("strong", {}, name), " from ", timeEl(override.start), " until ",
    timeEl(override.end), " ", remove);
}

function localInput(date) {
  // <input type=datetime-local> wants local time without a zone: YYYY-MM-DDTHH:MM.
  const shifted = new Date(date.getTime() - date.getTimezoneOffset() * 60e3);
  return shifted.toISOString().slice(0, 16);
}

function overrideForm(schedule, developers) {
  const who = field("Who", { name: "developer_id" }, {
    control: "select", options: developers.map((d) => [String(d.id), d.name]) });
  const now = new Date();
  const start = field("From", { type: "datetime-local", name: "start", value: localInput(now) });
  const end = field("Until", { type: "datetime-local", name: "end",
    value: localInput(new Date(now.getTime() + 3600e3)) });
  const problem = h("p", { class: "problem", role: "alert", hidden: true });
  const form = h("form", { class: "inline", novalidate: true,
    "aria-label": `Add an override to ${schedule.id}` },
    h("h4", {}, "Add an override"), problem,
    h("div", { class: "row" }, who.wrap, start.wrap, end.wrap),
    h("button", { type: "submit", class: "secondary" }, "Add override"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const f of [who, start, end]) setError(f, "");
    problem.hidden = true;
    const body = {
      developer_id: Number(who.input.value),
      start: start.input.value ? new Date(start.input.value).toISOString() : "",
      end: end.input.value ? new Date(end.input.value).toISOString() : "",
    };
    try {
      await api("POST", `/schedules/${enc(schedule.id)}/overrides`, body);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      const fields = { developer_id: who, start, end };
      let shown = false;
      for (const e of error.errors) {
        if (fields[e.field]) {
          setError(fields[e.field], e.problem);
          shown = true;
        }
      }
      if (!shown) {
        problem.hidden = false;
        problem.textContent = error.detail;
      }
      return;
    }
    notify(`Override added to ${schedule.id}.`);
    reload();
  });
  return form;
}
