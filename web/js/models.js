// The registry as a table (GET /admin/models), updated in place every few seconds so keyboard
// focus stays on the button it was on. Each row: load or unload, edit, delete.

import { ago, h, keepAlive, setText } from "./dom.js";

const COLUMNS = ["Model", "Engine", "State", "Context", "Last used", "Keep-alive", "Actions"];

export class ModelsTable {
  constructor(tbody, actions, engineLabel) {
    this.tbody = tbody;
    this.engineLabel = engineLabel;
    this.actions = actions; // {toggle(model), edit(model), remove(model)}
    this.rows = new Map();
    this.busy = new Set(); // aliases with an action this page is waiting on
  }

  update(models) {
    const aliases = models.map((model) => model.alias);
    for (const [alias, row] of this.rows) {
      if (!aliases.includes(alias)) {
        row.element.remove();
        this.rows.delete(alias);
      }
    }
    models.forEach((model, index) => {
      const row = this.rows.get(model.alias) || this.create(model.alias);
      row.model = model;
      if (this.tbody.children[index] !== row.element) this.tbody.insertBefore(row.element, this.tbody.children[index] || null);
      this.fill(row, model);
    });
  }

  create(alias) {
    const cells = COLUMNS.map((column) => h("td", { "data-label": column }));
    const row = {
      name: h("strong"),
      also: h("span", { class: "muted" }),
      state: h("span", { class: "state" }),
      detail: h("span", { class: "detail" }),
      element: h("tr", { "data-alias": alias }, cells),
      cells,
    };
    row.toggle = h("button", { type: "button", onclick: () => this.actions.toggle(row.model) });
    row.edit = h("button", { type: "button", onclick: () => this.actions.edit(row.model, row.edit), text: "Edit" });
    row.remove = h("button", { type: "button", class: "danger", onclick: () => this.actions.remove(row.model, row.remove), text: "Delete" });
    row.edit.setAttribute("aria-label", `Edit ${alias}`);
    row.remove.setAttribute("aria-label", `Delete ${alias}`);
    cells[0].append(row.name, " ", row.also);
    cells[2].append(row.state, " ", row.detail);
    cells[6].append(h("div", { class: "row-actions" }, row.toggle, row.edit, row.remove));
    this.rows.set(alias, row);
    return row;
  }

  fill(row, model) {
    setText(row.name, model.alias);
    setText(row.also, model.aliases.length ? `also ${model.aliases.join(", ")}` : "");
    const configured = model.engine !== model.configured_engine ? ` (registry: ${this.engineLabel(model.configured_engine)})` : "";
    setText(row.cells[1], this.engineLabel(model.engine) + configured);
    setText(row.state, model.state);
    row.state.dataset.state = model.state;
    let detail = "";
    if (model.state === "loading" || model.state === "unloading") detail = model.stage;
    else if (model.state === "failed") detail = model.failure || "";
    else if (model.fallback) detail = model.fallback;
    setText(row.detail, detail);
    setText(row.cells[3], String(model.context_length ?? model.effective_context_size));
    setText(row.cells[4], model.state === "loaded" && model.in_flight ? `now (${model.in_flight} running)` : ago(model.idle_seconds));
    setText(row.cells[5], keepAlive(model.keep_alive_seconds));

    const loaded = model.state === "loaded";
    const moving = model.state === "loading" || model.state === "unloading";
    setText(row.toggle, loaded ? "Unload" : "Load");
    row.toggle.setAttribute("aria-label", `${loaded ? "Unload" : "Load"} ${model.alias}`);
    row.toggle.disabled = moving || this.busy.has(model.alias);
    row.edit.disabled = this.busy.has(model.alias);
    row.remove.disabled = this.busy.has(model.alias);
  }
}
