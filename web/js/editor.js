// Edit one registry entry: context, keep-alive and every option of its engine kind, each input
// made from the option's declaration (/admin/backends: type, bounds, choices, description), so a
// new engine option shows here without a change to the page. "Apply" sends only what changed
// (PUT /admin/models/{alias}); an emptied field goes back to the server-wide default (null).

import { byId, h, label, setText } from "./dom.js";

function numberInput(id, { min, max, step = "any", value, placeholder }) {
  return h("input", { id, type: "number", inputmode: "decimal", min, max, step, value: value ?? "", placeholder });
}

function describeDefault(serverDefault) {
  if (serverDefault === null || serverDefault === undefined) return "engine decides";
  return `${serverDefault}`;
}

// A field: its element(s) and read() -> the value to store (undefined = not set in the entry).
function optionField(option, id, value, serverDefault) {
  const bounds = option.bounds || {};
  const placeholder = `default: ${describeDefault(serverDefault)}`;
  if (option.choices || option.type === "bool") {
    const choices = option.choices || [true, false];
    const select = h(
      "select",
      { id },
      h("option", { value: "", text: `server default (${describeDefault(serverDefault)})` }),
      choices.map((choice) => h("option", { value: JSON.stringify(choice), text: String(choice), selected: value === choice })),
    );
    return { control: select, read: () => (select.value === "" ? undefined : JSON.parse(select.value)) };
  }
  if (option.type === "float" && bounds.le !== undefined && (bounds.ge !== undefined || bounds.gt !== undefined)) {
    // A share such as gpu_memory_utilization: a slider, with a button back to the default.
    const step = 0.01;
    const min = bounds.ge ?? bounds.gt + step;
    const start = value ?? serverDefault ?? option.default ?? min;
    const slider = h("input", { id, type: "range", min, max: bounds.le, step, value: start });
    const output = h("output", { for: id, text: Number(start).toFixed(2) });
    let touched = value !== undefined;
    const reset = h("button", { type: "button", class: "small", text: "Use the default" });
    slider.addEventListener("input", () => {
      touched = true;
      setText(output, Number(slider.value).toFixed(2));
    });
    reset.addEventListener("click", () => {
      touched = false;
      slider.value = serverDefault ?? option.default ?? min;
      setText(output, `${Number(slider.value).toFixed(2)} (default)`);
    });
    return { control: h("div", { class: "slider" }, slider, output, reset), focus: slider, read: () => (touched ? Number(slider.value) : undefined) };
  }
  if (option.type === "int" || option.type === "float") {
    const min = bounds.ge ?? bounds.gt;
    const input = numberInput(id, { min, max: bounds.le, step: option.type === "int" ? 1 : "any", value, placeholder });
    return { control: input, read: () => (input.value === "" ? undefined : Number(input.value)) };
  }
  const input = h("input", { id, type: "text", value: value ?? "", placeholder, autocomplete: "off" });
  return { control: input, read: () => (input.value.trim() === "" ? undefined : input.value.trim()) };
}

function fieldRow(id, title, help, field) {
  const helpId = `${id}-help`;
  (field.focus || field.control).setAttribute("aria-describedby", helpId);
  const error = h("p", { class: "field-error", id: `${id}-error`, role: "alert" });
  return h("div", { class: "field" }, h("label", { for: id, text: title }), field.control, h("p", { class: "help", id: helpId, text: help }), error);
}

export class ModelEditor {
  constructor(section, apply) {
    this.section = section;
    this.apply = apply; // async (alias, changes) -> answer
    this.form = byId("edit-form");
    this.fields = byId("edit-fields");
    this.title = byId("edit-title");
    this.status = byId("edit-status");
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    byId("edit-cancel").addEventListener("click", () => this.close());
    this.section.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.close();
    });
  }

  open(model, kind, opener) {
    this.model = model;
    this.opener = opener;
    this.entries = [];
    setText(this.title, `Edit ${model.alias}`);
    setText(this.status, "");
    const entry = model.entry;
    const defaults = model.server_defaults;
    const rows = [];
    const add = (path, title, help, field) => {
      const id = `edit-${path.replace(".", "-")}`;
      this.entries.push({ path, field, initial: field.read(), id });
      rows.push(fieldRow(id, title, help, field));
    };
    const plain = (id, options) => {
      const control = numberInput(id, options);
      return { control, read: () => (control.value === "" ? undefined : Number(control.value)) };
    };
    add("context_size", "context size", `Tokens per request (prompt and answer). Empty: the server's JARVIS_CONTEXT_SIZE (${defaults.context_size}).`,
      plain("edit-context_size", { min: 256, step: 1, value: entry.context_size, placeholder: `default: ${defaults.context_size}` }));
    add("keep_alive_seconds", "keep-alive (seconds)", `Idle seconds before the model is unloaded; 0 = never. Empty: the server's JARVIS_KEEP_ALIVE_SECONDS (${defaults.keep_alive_seconds}).`,
      plain("edit-keep_alive_seconds", { min: 0, step: 1, value: entry.keep_alive_seconds, placeholder: `default: ${defaults.keep_alive_seconds}` }));
    for (const option of kind.options) {
      const id = `edit-options-${option.name}`;
      const value = (entry.options || {})[option.name];
      add(`options.${option.name}`, label(option.name), `${kind.label}: ${option.description}`, optionField(option, id, value, defaults.options[option.name]));
    }
    this.fields.replaceChildren(h("p", { class: "hint", text: `${kind.label} options. Apply reloads ${model.alias} if it is loaded; requests in flight finish first.` }), ...rows);
    this.section.hidden = false;
    this.title.focus();
  }

  changes() {
    const changes = {};
    for (const { path, field, initial } of this.entries) {
      const next = field.read();
      if (next === initial) continue;
      const value = next === undefined ? null : next;
      if (path.startsWith("options.")) {
        changes.options = changes.options || {};
        changes.options[path.slice("options.".length)] = value;
      } else {
        changes[path] = value;
      }
    }
    return changes;
  }

  async submit() {
    for (const { id } of this.entries) {
      setText(byId(`${id}-error`), "");
      byId(id).removeAttribute("aria-invalid");
    }
    const changes = this.changes();
    if (Object.keys(changes).length === 0) {
      setText(this.status, "Nothing changed.");
      return;
    }
    const apply = byId("edit-apply");
    apply.disabled = true;
    setText(this.status, `Applying: ${this.model.alias} reloads once its requests in flight finish…`);
    try {
      const answer = await this.apply(this.model.alias, changes);
      this.close();
      return answer;
    } catch (error) {
      const field = error.param && this.entries.find((candidate) => candidate.path === error.param);
      if (field) {
        setText(byId(`${field.id}-error`), error.message);
        byId(field.id).setAttribute("aria-invalid", "true");
        byId(field.id).focus();
      }
      setText(this.status, error.message);
    } finally {
      apply.disabled = false;
    }
  }

  close() {
    this.section.hidden = true;
    if (this.opener && this.opener.isConnected) this.opener.focus();
  }
}
