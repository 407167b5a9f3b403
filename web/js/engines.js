// One card per engine kind (from /admin/backends, so a new kind gets its card): installed or not
// and why, what runs on it, the loading stage as it happens, slots and queue, and the button that
// moves the default model onto it (POST /admin/engine).

import { duration, h, setText, show } from "./dom.js";

const FACTS = {
  installed: "Installed",
  running: "Running",
  model: "Model",
  stage: "Health",
  slots: "Slots busy",
  queue: "Queue",
  upstreams: "Upstreams",
};

const ON_ENGINE = new Set(["loaded", "loading", "unloading"]);

function build(engine) {
  const report = engine.build || {};
  const name = report.distribution || (report.version ? engine.label : "");
  const detail = report.build ? `${report.build} build` : report.build_profile ? `${report.build_profile} build` : "";
  const description = [name, report.version].filter(Boolean).join(" ") + (detail ? ` (${detail})` : "");
  return description ? `yes: ${description}` : "yes";
}

export class EngineCards {
  constructor(container, onSwitch) {
    this.container = container;
    this.onSwitch = onSwitch;
    this.cards = new Map();
    this.pending = null; // {engine, since}: a switch this page asked for and is waiting on
    this.loadingSince = new Map(); // alias -> when this page first saw it loading
  }

  update(backends, status) {
    if (!backends || !status) return;
    const now = Date.now();
    for (const model of status.models) {
      if (model.state === "loading" && !this.loadingSince.has(model.alias)) this.loadingSince.set(model.alias, now);
      if (model.state !== "loading") this.loadingSince.delete(model.alias);
    }
    const changing = Boolean(this.pending) || status.models.some((model) => model.state === "loading" || model.state === "unloading");
    const labels = Object.fromEntries(backends.engines.map((engine) => [engine.name, engine.label]));
    for (const engine of backends.engines) {
      const card = this.cards.get(engine.name) || this.create(engine);
      this.fill(card, engine, status, changing, labels);
    }
  }

  create(engine) {
    const titleId = `engine-${engine.name}-title`;
    const facts = Object.fromEntries(Object.keys(FACTS).map((key) => [key, h("dd", { "data-fact": key })]));
    const card = {
      badge: h("span", { class: "badge" }),
      facts,
      progress: h("p", { class: "progress", role: "status", hidden: true }),
      button: h("button", { type: "button", class: "primary", onclick: () => this.onSwitch(engine) }),
      hint: h("p", { class: "hint" }),
    };
    card.element = h(
      "article",
      { class: "card engine", "data-engine": engine.name, "aria-labelledby": titleId },
      h("header", { class: "card-head" }, h("h3", { id: titleId, text: engine.label }), card.badge),
      h("dl", { class: "facts" }, Object.entries(FACTS).map(([key, text]) => [h("dt", { text }), facts[key]])),
      card.progress,
      card.button,
      card.hint,
    );
    this.container.append(card.element);
    this.cards.set(engine.name, card);
    return card;
  }

  fill(card, engine, status, changing, labels) {
    const models = status.models.filter((model) => model.engine === engine.name && ON_ENGINE.has(model.state));
    const loaded = models.filter((model) => model.state === "loaded");
    const loading = models.find((model) => model.state === "loading");
    const active = status.engine === engine.name;
    const defaultModel = status.models.find((model) => model.alias === status.default_model);

    const badge = !engine.available ? "not installed" : loading && loading.alias === status.default_model ? "starting" : active ? "active" : "standby";
    setText(card.badge, badge);
    card.badge.dataset.state = badge.replace(" ", "-");
    card.element.dataset.active = String(active);

    setText(card.facts.installed, engine.available ? build(engine) : `no: ${engine.reason}`);
    setText(card.facts.running, loaded.length ? "yes" : loading ? "starting" : "no");
    setText(card.facts.model, models.length ? models.map((model) => `${model.alias} (${model.state})`).join(", ") : "none");
    const failed = active && defaultModel && defaultModel.state === "failed" ? defaultModel : null;
    const stageOf = loading || loaded[0] || models[0];
    setText(card.facts.stage, failed ? `failed: ${failed.failure}` : stageOf ? (stageOf.stage === "ready" ? "ready" : stageOf.stage) : "–");
    let busy = 0;
    let slots = 0;
    let queue = 0;
    for (const model of loaded) {
      const stats = model.engine_stats || {};
      busy += stats.busy_slots ?? model.in_flight;
      slots += stats.parallel ?? 0;
      queue += stats.queue_length ?? 0;
    }
    setText(card.facts.slots, loaded.length ? (slots ? `${busy} of ${slots}` : String(busy)) : "–");
    setText(card.facts.queue, loaded.length ? String(queue) : "–");
    // A remote engine's models run on other servers: each upstream, up or down and why, and its load.
    const upstreams = loaded.flatMap((model) => (model.engine_stats?.upstreams || []).map((upstream) => ({ model, upstream })));
    setText(
      card.facts.upstreams,
      upstreams.length
        ? upstreams
            .map(({ model, upstream }) => `${model.alias} → ${upstream.name}: ${upstream.healthy ? `up, ${upstream.in_flight} running` : `down (${upstream.reason})`}`)
            .join("; ")
        : "–",
    );

    this.fillProgress(card, engine, status, loading, labels);

    if (engine.local === false) {
      // A model moves onto a remote engine by its registry entry (engine: openai), not by a switch.
      show(card.button, false);
      setText(card.hint, "Models with engine: openai in the registry run here; edit an entry to move a model onto other servers.");
      return;
    }
    show(card.button, !active);
    setText(card.button, `Switch to ${engine.label}`);
    card.button.disabled = !engine.available || changing;
    const activeLabel = labels[status.engine] || status.engine;
    let hint = "";
    if (!engine.available) hint = engine.reason;
    else if (!active) hint = `Requests in flight finish on ${activeLabel} first; then ${status.default_model} loads on ${engine.label}, which can take minutes. The stage shows here as it goes.`;
    setText(card.hint, hint);
  }

  fillProgress(card, engine, status, loading, labels) {
    const pending = this.pending && this.pending.engine === engine.name ? this.pending : null;
    let text = "";
    if (loading || pending) {
      const since = (loading && this.loadingSince.get(loading.alias)) || (pending && pending.since) || Date.now();
      const stage = loading ? loading.stage : "asking the server";
      const alias = loading ? loading.alias : status.default_model;
      const doing = pending ? `Switching ${alias} to` : `Loading ${alias} on`;
      text = `${doing} ${engine.label}: ${stage} (${duration((Date.now() - since) / 1000)})`;
    } else if (this.pending && this.pending.from === engine.name) {
      text = `Switching to ${labels[this.pending.engine]}: requests in flight finish here first.`;
    }
    setText(card.progress, text);
    show(card.progress, Boolean(text));
  }
}
