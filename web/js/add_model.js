// Add a model: a GGUF path, an HF model folder or id, or a pasted `vllm serve ...` command is
// read on the server (POST /admin/propose-model, the logic of `jarvis add-model`), the proposed
// entry is shown with what the model said about itself, and "Add" writes it (POST /admin/models).

import * as api from "./api.js";
import { byId, h, setText } from "./dom.js";

function facts(object) {
  return Object.entries(object)
    .filter(([name, value]) => value !== null && value !== undefined && name !== "source" && name !== "format")
    .flatMap(([name, value]) => [h("dt", { text: name.replaceAll("_", " ") }), h("dd", { text: typeof value === "object" ? JSON.stringify(value) : String(value) })]);
}

export class AddModel {
  constructor(onAdded) {
    this.onAdded = onAdded; // (answer) => void
    this.form = byId("add-form");
    this.source = byId("add-source");
    this.error = byId("add-error");
    this.proposalBox = byId("add-proposal");
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.check();
    });
    byId("add-confirm").addEventListener("click", () => this.add());
    byId("add-cancel").addEventListener("click", () => this.reset());
  }

  async check() {
    setText(this.error, "");
    this.proposalBox.hidden = true;
    const source = this.source.value.trim();
    if (!source) {
      setText(this.error, "Give a model file, an HF model folder or id, or a vllm serve command.");
      this.source.focus();
      return;
    }
    const button = byId("add-check");
    button.disabled = true;
    try {
      this.proposal = await api.post("/propose-model", { source });
      this.showProposal(this.proposal);
    } catch (error) {
      setText(this.error, error.message);
      this.source.focus();
    } finally {
      button.disabled = false;
    }
  }

  showProposal(proposal) {
    const entry = proposal.entry;
    byId("add-alias").value = entry.alias;
    byId("add-context").value = entry.context_size ?? "";
    const shown = { ...entry };
    delete shown.alias;
    delete shown.context_size;
    byId("add-entry").replaceChildren(...facts(shown));
    byId("add-detected").replaceChildren(...facts(proposal.detected));
    byId("add-notes").replaceChildren(...proposal.notes.map((note) => h("li", { text: note })));
    this.proposalBox.hidden = false;
    byId("add-proposal-title").focus();
  }

  async add() {
    setText(this.error, "");
    const entry = { ...this.proposal.entry, alias: byId("add-alias").value.trim() };
    const context = byId("add-context").value;
    if (context === "") delete entry.context_size;
    else entry.context_size = Number(context);
    const button = byId("add-confirm");
    button.disabled = true;
    try {
      const answer = await api.post("/models", entry);
      this.reset();
      this.onAdded(answer);
    } catch (error) {
      setText(this.error, error.message);
      (error.param === "context_size" ? byId("add-context") : byId("add-alias")).focus();
    } finally {
      button.disabled = false;
    }
  }

  reset() {
    this.proposal = null;
    this.proposalBox.hidden = true;
    this.source.value = "";
    setText(this.error, "");
  }
}
