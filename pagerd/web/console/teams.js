// Teams: create one with its developers, add developers, see the rotation.

import { ApiError, api, enc } from "./api.js";
import { field, h, mask, notify, setError } from "./dom.js";

export async function teamsView(container) {
  const { teams } = await api("GET", "/teams");
  const list = teams.length === 0
    ? h("p", { class: "empty" }, "No teams yet.")
    : h("ul", { class: "cards" }, teams.map(teamCard));
  container.append(h("h1", {}, "Teams"), list, createForm());
}

function reload() {
  window.dispatchEvent(new HashChangeEvent("hashchange"));
}

function teamCard({ team, developers, ...more }) {
  // Shown when the API tells them (config-file teams; the rotation's position).
  const managed = more.managed ?? team.managed ?? false;
  const nextId = more.next_developer_id ?? team.next_developer_id;
  const rotation = h("ol", { class: "rotation" }, developers.map((d) => h("li", {},
    d.name, " ", h("span", { class: "masked" }, mask(d.phone_number)),
    d.id === nextId ? h("span", { class: "badge next" }, "next on call") : "")));
  const card = h("li", { class: "card" },
    h("h2", {}, team.name, managed ? h("span", { class: "badge managed" }, "config file") : ""),
    h("p", { class: "hint" },
      `Rotation, in order (service team-${team.id} pages the next one; ${developers.length} developers):`),
    rotation);
  if (!managed) card.append(addDeveloperForm(team));
  return card;
}

function addDeveloperForm(team) {
  const name = field("Name", { name: "name", autocomplete: "off" });
  const phone = field("Phone number", { name: "phone_number", type: "tel", autocomplete: "off" });
  const problem = h("p", { class: "problem", role: "alert", hidden: true });
  const form = h("form", { class: "inline", novalidate: true, "aria-label": `Add a developer to ${team.name}` },
    h("h3", {}, "Add a developer"), problem, h("div", { class: "row" }, name.wrap, phone.wrap),
    h("button", { type: "submit", class: "secondary" }, "Add developer"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    setError(name, "");
    setError(phone, "");
    problem.hidden = true;
    try {
      await api("POST", `/teams/${enc(team.id)}/developers`,
        { name: name.input.value.trim(), phone_number: phone.input.value.trim() });
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      placeErrors(error, { name, phone_number: phone }, problem);
      return;
    }
    notify(`${name.input.value.trim()} added to ${team.name}.`);
    reload();
  });
  return form;
}

function createForm() {
  const teamName = field("Team name", { name: "team", autocomplete: "off" });
  const rows = h("ol", { class: "developers" });
  const fields = { "team.name": teamName };
  const problem = h("p", { class: "problem", role: "alert", hidden: true });
  const developers = [];

  function addRow(focus) {
    const i = developers.length;
    const name = field("Name", { name: `developers[${i}].name`, autocomplete: "off" });
    const phone = field("Phone number",
      { name: `developers[${i}].phone_number`, type: "tel", autocomplete: "off" });
    const row = { name, phone, li: null, remove: null };
    const remove = h("button", { type: "button", class: "quiet danger",
      "aria-label": `Remove developer ${i + 1}`,
      onclick: () => {
        developers.splice(developers.indexOf(row), 1);
        row.li.remove();
        renumber();
        add.focus();
      } }, "Remove");
    row.remove = remove;
    row.li = h("li", {}, h("fieldset", {},
      h("legend", {}, `Developer ${i + 1}`), h("div", { class: "row" }, name.wrap, phone.wrap), remove));
    developers.push(row);
    rows.append(row.li);
    renumber();
    if (focus) name.input.focus();
  }

  function renumber() {
    developers.forEach((row, i) => {
      row.li.querySelector("legend").textContent = `Developer ${i + 1}`;
      row.remove.setAttribute("aria-label", `Remove developer ${i + 1}`);
      row.remove.hidden = developers.length === 1; // a team needs someone
      fields[`developers[${i}].name`] = row.name;
      fields[`developers[${i}].phone_number`] = row.phone;
    });
  }

  const add = h("button", { type: "button", class: "secondary", onclick: () => addRow(true) },
    "Add another developer");
  const form = h("form", { class: "card", novalidate: true },
    h("h2", {}, "Create a team"),
    h("p", { class: "hint" }, "Developers are paged in this order, one per incident."),
    problem, teamName.wrap, rows, add, h("div", { class: "actions" },
      h("button", { type: "submit" }, "Create team")));
  addRow(false);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const f of Object.values(fields)) setError(f, "");
    problem.hidden = true;
    const body = {
      team: { name: teamName.input.value.trim() },
      developers: developers.map((row) => ({
        name: row.name.input.value.trim(), phone_number: row.phone.input.value.trim(),
      })),
    };
    let created;
    try {
      created = await api("POST", "/teams", body);
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      const current = Object.fromEntries(Object.entries(fields)
        .filter(([k]) => !k.startsWith("developers[") ||
          Number(k.match(/\[(\d+)\]/)[1]) < developers.length));
      if (error.status === 409) {
        setError(teamName, error.detail);
        teamName.input.focus();
      } else {
        placeErrors(error, current, problem);
      }
      return;
    }
    notify(`Team ${created.team.name} created with ${created.developers.length} developers.`);
    reload();
  });
  return form;
}

/** Show each of a 422's errors at its field; the rest (or the detail) above the form. */
function placeErrors(error, fields, problem) {
  const rest = [];
  let first = null;
  for (const e of error.errors) {
    const f = fields[e.field];
    if (f) {
      setError(f, e.problem);
      first = first || f;
    } else {
      rest.push(`${e.field}: ${e.problem}`);
    }
  }
  if (rest.length || !first) {
    problem.hidden = false;
    problem.textContent = rest.length ? rest.join("; ") : error.detail;
  }
  if (first) problem.closest("form").querySelector('[aria-invalid="true"]').focus();
}
