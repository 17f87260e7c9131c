// Escalation policies: the list, and an editor of levels, targets, timeouts and repeat.
// The API validates; its 422 names each field, and the error is shown at that field.

import { ApiError, api, enc } from "./api.js";
import { field, h, mask, notify, setError } from "./dom.js";

const MANAGED = "managed by config file";
const KINDS = [
  ["sms", "SMS", "phone_number", "Phone number"],
  ["email", "Email", "address", "Email address"],
  ["team", "Team (next in rotation)", "team_id", "Team"],
  ["webhook", "Webhook", "url", "URL"],
];

function describeTarget(target) {
  switch (target.type) {
    case "sms": return `SMS ${target.phone_number}`;
    case "email": return `Email ${target.address}`;
    case "team": return `Team ${target.team ?? `#${target.team_id}`}`;
    case "webhook": return `Webhook ${mask(target.url, "webhook")}`; // a path may hold a secret
    default: return target.type;
  }
}

function isManaged(policy) {
  return policy.managed === true;
}

export async function policiesView(container) {
  const [{ policies }, { services }] = await Promise.all([
    api("GET", "/policies"), api("GET", "/services")]);
  const users = new Map();
  for (const s of services) users.set(s.policy_id, [...(users.get(s.policy_id) || []), s.id]);
  const newId = field("Policy id", { name: "id", required: true, autocomplete: "off" },
    { hint: "Letters, digits, . _ -" });
  const create = h("form", { class: "card", novalidate: true },
    h("h2", {}, "New policy"), newId.wrap, h("button", { type: "submit" }, "Create policy"));
  create.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = newId.input.value.trim();
    if (!id) {
      setError(newId, "is required");
      newId.input.focus();
      return;
    }
    if (policies.some((p) => p.id === id)) {
      setError(newId, "a policy with this id exists; open it from the list");
      newId.input.focus();
      return;
    }
    location.hash = `#/policies/${enc(id)}`;
  });
  const list = policies.length === 0
    ? h("p", { class: "empty" }, "No policies yet.")
    : h("ul", { class: "cards" }, policies.map((p) => h("li", { class: "card" },
      h("h2", {}, h("a", { href: `#/policies/${enc(p.id)}` }, p.id),
        isManaged(p) ? h("span", { class: "badge managed" }, "config file") : ""),
      h("ol", { class: "levels-brief" }, p.levels.map((level) => h("li", {},
        `${level.targets.map(describeTarget).join(", ")} — ${level.ack_timeout_s} s`))),
      h("p", { class: "hint" },
        `Repeat ${p.repeat}. `,
        users.has(p.id) ? `Used by ${users.get(p.id).join(", ")}.` : "Not used by any service."))));
  container.append(h("h1", {}, "Escalation policies"), list, create);
}

export async function policyView(container, policyId) {
  const [{ teams }, loaded] = await Promise.all([
    api("GET", "/teams"),
    api("GET", `/policies/${enc(policyId)}`).catch((error) => {
      if (error instanceof ApiError && error.status === 404) return null;
      throw error;
    }),
  ]);
  const isNew = loaded === null;
  const editor = new Editor(container, policyId, teams, loaded, isNew);
  editor.render();
}

function stateOf(policy) {
  if (!policy) return { repeat: "0", levels: [{ ack_timeout_s: "", targets: [{ type: "sms", phone_number: "" }] }] };
  return {
    repeat: String(policy.repeat),
    levels: policy.levels.map((level) => ({
      ack_timeout_s: String(level.ack_timeout_s),
      targets: level.targets.map((t) => ({ ...t })),
    })),
  };
}

class Editor {
  constructor(container, id, teams, policy, isNew) {
    this.container = container;
    this.id = id;
    this.teams = teams.map((t) => t.team);
    this.policy = policy;
    this.isNew = isNew;
    this.readOnly = policy !== null && isManaged(policy);
    this.state = stateOf(policy);
    this.fields = new Map(); // field path -> field, for the API's errors
    this.errors = null;
  }

  render(focusPath = null) {
    this.fields.clear();
    const heading = h("h1", {}, this.isNew ? `New policy ${this.id}` : `Policy ${this.id}`);
    const crumbs = h("p", { class: "crumbs" }, h("a", { href: "#/policies" }, "← Policies"));
    if (this.readOnly) {
      this.container.replaceChildren(crumbs, heading, this.readOnlyView());
      return;
    }
    const problem = h("div", { class: "problem", role: "alert", id: "policy-problem", hidden: true });
    const repeat = field("Repeat", {
      name: "repeat", inputmode: "numeric", value: this.state.repeat, autocomplete: "off",
      oninput: (e) => { this.state.repeat = e.target.value; },
    }, { hint: "Rounds from level 1 after the last level times out (0–9)." });
    this.fields.set("repeat", repeat);
    const levels = h("ol", { class: "levels" },
      this.state.levels.map((level, i) => this.levelEditor(level, i)));
    const addLevel = h("button", { type: "button", class: "secondary", id: "add-level",
      onclick: () => {
        this.state.levels.push({ ack_timeout_s: "", targets: [{ type: "sms", phone_number: "" }] });
        this.errors = null;
        this.render(`levels[${this.state.levels.length - 1}].ack_timeout_s`);
      } }, "Add level");
    const save = h("button", { type: "submit" }, this.isNew ? "Create policy" : "Save policy");
    const form = h("form", { class: "editor", novalidate: true, "aria-labelledby": "policy-title" },
      problem, levels, addLevel, h("div", { class: "card" }, repeat.wrap),
      h("div", { class: "actions" }, save,
        this.isNew ? "" : h("button", { type: "button", class: "danger", onclick: () => this.remove() },
          "Delete policy")));
    heading.id = "policy-title";
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.save();
    });
    this.container.replaceChildren(crumbs, heading, form);
    this.problem = problem;
    if (this.errors) this.showErrors(this.errors);
    if (focusPath) {
      const f = this.fields.get(focusPath);
      if (f) f.input.focus();
      else document.getElementById(focusPath)?.focus();
    }
  }

  levelEditor(level, i) {
    const n = this.state.levels.length;
    const timeout = field("Acknowledge timeout (seconds)", {
      name: `levels[${i}].ack_timeout_s`, inputmode: "decimal", autocomplete: "off",
      value: level.ack_timeout_s, oninput: (e) => { level.ack_timeout_s = e.target.value; },
    }, { hint: "Empty: the default of [escalation] ack_timeout_s." });
    this.fields.set(`levels[${i}].ack_timeout_s`, timeout);
    const targetsError = h("p", { class: "error", id: `levels-${i}-targets-error` });
    const targets = h("ul", { class: "targets", "aria-describedby": targetsError.id },
      level.targets.map((target, j) => this.targetEditor(level, target, i, j)));
    this.fields.set(`levels[${i}].targets`, { input: targets, error: targetsError });
    this.fields.set(`levels[${i}]`, { input: targets, error: targetsError });
    const move = (to) => () => {
      const [moved] = this.state.levels.splice(i, 1);
      this.state.levels.splice(to, 0, moved);
      this.errors = null;
      const which = to < i ? "up" : "down";
      const stillCan = which === "up" ? to > 0 : to < n - 1;
      this.render(`level-${to}-${stillCan ? which : which === "up" ? "down" : "up"}`);
    };
    return h("li", { class: "level card" },
      h("fieldset", {},
        h("legend", {}, `Level ${i + 1}`),
        timeout.wrap,
        h("h3", {}, "Targets"), targets, targetsError,
        h("div", { class: "tools" },
          h("button", { type: "button", class: "secondary", id: `level-${i}-add-target`,
            onclick: () => {
              level.targets.push({ type: "sms", phone_number: "" });
              this.errors = null;
              this.render(`levels[${i}].targets[${level.targets.length - 1}].type`);
            } }, "Add target"),
          h("button", { type: "button", class: "quiet", id: `level-${i}-up`, disabled: i === 0,
            "aria-label": `Move level ${i + 1} up`, onclick: move(i - 1) }, "Move up"),
          h("button", { type: "button", class: "quiet", id: `level-${i}-down`, disabled: i === n - 1,
            "aria-label": `Move level ${i + 1} down`, onclick: move(i + 1) }, "Move down"),
          h("button", { type: "button", class: "quiet danger", disabled: n === 1,
            "aria-label": `Remove level ${i + 1}`,
            onclick: () => {
              this.state.levels.splice(i, 1);
              this.errors = null;
              this.render(i > 0 ? `level-${i - 1}-add-target` : "add-level");
            } }, "Remove level"))));
  }

  targetEditor(level, target, i, j) {
    const path = `levels[${i}].targets[${j}]`;
    const slot = h("div", { class: "slot" });
    const kind = field("Kind", {
      name: `${path}.type`,
      // Only the value field changes: the select keeps the focus while arrow keys try kinds.
      onchange: (e) => {
        const [type, , key] = KINDS.find(([t]) => t === e.target.value);
        level.targets[j] = { type, [key]: type === "team" ? this.teams[0]?.id ?? "" : "" };
        slot.replaceChildren(this.valueField(level.targets[j], path).wrap);
      },
    }, { control: "select", options: KINDS.map(([t, label]) => [t, label]) });
    kind.input.value = target.type;
    this.fields.set(`${path}.type`, kind);
    this.fields.set(path, kind);
    slot.append(this.valueField(target, path).wrap);
    const remove = h("button", { type: "button", class: "quiet danger",
      "aria-label": `Remove target ${j + 1} of level ${i + 1}`,
      onclick: () => {
        level.targets.splice(j, 1);
        this.errors = null;
        this.render(`level-${i}-add-target`);
      } }, "Remove");
    return h("li", { class: "target" }, h("fieldset", {},
      h("legend", { class: "visually-hidden" }, `Level ${i + 1}, target ${j + 1}`),
      kind.wrap, slot, remove));
  }

  /** The field of a target's phone number, address, team or URL. */
  valueField(target, path) {
    const [, , key, label] = KINDS.find(([t]) => t === target.type) || KINDS[0];
    let value;
    if (target.type === "team") {
      if (target.team_id === undefined || target.team_id === null) {
        target.team_id = this.teams.find((t) => t.name === target.team)?.id ?? this.teams[0]?.id ?? "";
      }
      delete target.team;
      value = field(label, {
        name: `${path}.team_id`,
        onchange: (e) => { target.team_id = Number(e.target.value); },
      }, { control: "select", options: this.teams.map((t) => [String(t.id), t.name]) });
      value.input.value = String(target.team_id);
      if (this.teams.length === 0) setError(value, "no teams yet: create one under Teams");
      this.fields.set(`${path}.team`, value);
    } else {
      const types = { phone_number: "tel", address: "email", url: "url" };
      value = field(label, {
        name: `${path}.${key}`, type: types[key], autocomplete: "off",
        value: target[key] ?? "",
        oninput: (e) => { target[key] = e.target.value.trim(); },
      });
    }
    this.fields.set(`${path}.${key}`, value);
    return value;
  }

  body() {
    const number = (text) => {
      const t = text.trim();
      // Anything not a number goes as typed: the API names what is wrong with it.
      return t !== "" && Number.isFinite(Number(t)) ? Number(t) : t;
    };
    return {
      repeat: number(this.state.repeat) === "" ? 0 : number(this.state.repeat),
      levels: this.state.levels.map((level) => {
        const out = { targets: level.targets.map((t) => ({ ...t })) };
        const timeout = number(level.ack_timeout_s);
        if (timeout !== "") out.ack_timeout_s = timeout;
        return out;
      }),
    };
  }

  async save() {
    this.errors = null;
    this.showErrors(null);
    try {
      const saved = await api("PUT", `/policies/${enc(this.id)}`, this.body());
      notify(`Policy ${saved.id} saved.`);
      this.policy = saved;
      this.isNew = false;
      this.state = stateOf(saved);
      this.render();
      this.problem.hidden = false;
      this.problem.className = "ok";
      this.problem.textContent = `Saved. It takes effect from the next escalation step.`;
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      if (error.status === 409 && error.detail.includes(MANAGED)) {
        this.readOnly = true;
        this.render();
        return;
      }
      this.errors = error;
      this.showErrors(error);
    }
  }

  async remove() {
    if (!window.confirm(`Delete policy ${this.id}?`)) return;
    try {
      await api("DELETE", `/policies/${enc(this.id)}`);
    } catch (error) {
      this.problem.hidden = false;
      this.problem.textContent = error.detail || String(error);
      return;
    }
    notify(`Policy ${this.id} deleted.`);
    location.hash = "#/policies";
  }

  showErrors(error) {
    for (const f of this.fields.values()) {
      f.error.textContent = "";
      f.input.removeAttribute("aria-invalid");
    }
    this.problem.hidden = true;
    this.problem.className = "problem";
    if (!error) return;
    const unplaced = [];
    let first = null;
    for (const e of error.errors) {
      const f = this.fields.get(e.field);
      if (f) {
        setError(f, f.error.textContent ? `${f.error.textContent}; ${e.problem}` : e.problem);
        first = first || f;
      } else {
        unplaced.push(`${e.field}: ${e.problem}`);
      }
    }
    if (unplaced.length || !first) {
      this.problem.hidden = false;
      this.problem.replaceChildren(
        h("p", {}, error.errors.length ? "The policy was not saved:" : error.detail),
        unplaced.length ? h("ul", {}, unplaced.map((text) => h("li", {}, text))) : "");
    } else {
      this.problem.hidden = false;
      this.problem.textContent = "The policy was not saved: see the fields marked below.";
    }
    // The first marked field on the page, not the first the API named.
    if (first) this.container.querySelector('[aria-invalid="true"]').focus();
  }

  readOnlyView() {
    const p = this.policy;
    return h("div", {},
      h("p", { class: "note", role: "note" },
        "This policy is declared in the config file (pagerd.toml) and is read-only here: ",
        "change it in the file and restart pagerd."),
      h("ol", { class: "levels" }, p.levels.map((level, i) => h("li", { class: "level card" },
        h("h2", {}, `Level ${i + 1}`),
        h("p", {}, `Acknowledge timeout: ${level.ack_timeout_s} s`),
        h("ul", {}, level.targets.map((t) => h("li", {}, describeTarget(t))))))),
      h("p", {}, `Repeat: ${p.repeat}`));
  }
}
