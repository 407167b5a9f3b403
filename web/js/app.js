// The settings page: sign in with the admin key, then keep the engine cards, the models table and
// the charts in step with the server by polling the admin API. Every action is an admin API call,
// so it lands in the server's audit trail like any other.

import { AddModel } from "./add_model.js";
import * as api from "./api.js";
import { Chart, FIGURES } from "./charts.js";
import { byId, duration, mib, setText, show } from "./dom.js";
import { ModelEditor } from "./editor.js";
import { EngineCards } from "./engines.js";
import { ModelsTable } from "./models.js";
import { TestBox } from "./testbox.js";

const STATUS_EVERY_MS = 2000;
const FIGURES_EVERY_MS = 5000;
const BACKENDS_EVERY_MS = 30000;

const state = { status: null, models: [], backends: null, figures: null, timers: [] };

function notify(text, kind = "info") {
  const notice = byId("notice");
  setText(notice, text);
  notice.dataset.kind = kind;
  show(notice, Boolean(text));
}

// ---- signing in -----------------------------------------------------------------------------

function showOnly(id) {
  for (const section of ["admin-off", "sign-in", "console"]) show(byId(section), section === id);
  show(byId("sign-out"), id === "console");
}

function showAdminOff() {
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  setText(byId("suggested-key"), `JARVIS_ADMIN_KEY=${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`);
  showOnly("admin-off");
}

function showSignIn(message = "") {
  stopPolling();
  showOnly("sign-in");
  setText(byId("sign-in-error"), message);
  byId("admin-key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = byId("admin-key");
  const key = input.value.trim();
  if (!key) {
    setText(byId("sign-in-error"), "Type the admin key (JARVIS_ADMIN_KEY).");
    return;
  }
  try {
    state.status = await api.admin("GET", "/status", undefined, key);
  } catch (error) {
    if (error.status === 403) return showAdminOff();
    const message = error.status === 401 ? "Wrong key: the server refused it. Use the JARVIS_ADMIN_KEY this server was started with." : error.message;
    setText(byId("sign-in-error"), message);
    input.select();
    return;
  }
  api.keys.setAdmin(key);
  input.value = "";
  await enter();
}

function signOut(message = "") {
  api.keys.clear();
  notify("");
  showSignIn(message);
}

// Without a key: is the admin API off (403), or waiting for a key (401)?
async function probe() {
  try {
    await api.admin("GET", "/status", undefined, null);
  } catch (error) {
    if (error.status === 403 && error.code !== "host_not_allowed") return showAdminOff();
    return showSignIn(error.status === 401 ? "" : error.message);
  }
}

// ---- the console ----------------------------------------------------------------------------

const cards = new EngineCards(byId("engine-cards"), switchEngine);
const table = new ModelsTable(byId("models-body"), { toggle: toggleModel, edit: editModel, remove: confirmDelete }, engineLabel);
const editor = new ModelEditor(byId("edit-section"), applyChanges);
const testBox = new TestBox();
const charts = FIGURES.map((figure) => new Chart(byId("charts"), figure));
new AddModel((answer) => {
  const warnings = answer.warnings && answer.warnings.length ? ` Note: ${answer.warnings.join("; ")}` : "";
  notify(`Added ${answer.created} to ${answer.registry.path}.${warnings}`);
  refresh();
});

async function enter() {
  showOnly("console");
  await Promise.all([refresh(), refreshBackends(), refreshFigures()]);
  startPolling();
}

function startPolling() {
  stopPolling();
  state.timers = [
    setInterval(refresh, STATUS_EVERY_MS),
    setInterval(refreshFigures, FIGURES_EVERY_MS),
    setInterval(refreshBackends, BACKENDS_EVERY_MS),
  ];
}

function stopPolling() {
  state.timers.forEach(clearInterval);
  state.timers = [];
}

// A failed poll: a refused key signs out; anything else shows and polling goes on.
function pollFailed(error) {
  if (error.status === 401) signOut("The server no longer accepts this key (restarted with another JARVIS_ADMIN_KEY?). Sign in again.");
  else {
    setText(byId("server-line"), error.message);
    byId("server-line").dataset.ready = "false";
  }
}

async function refresh() {
  if (document.hidden && state.status) return; // a tab in the background asks nothing
  try {
    const [status, registry] = await Promise.all([api.get("/status"), api.get("/models")]);
    state.status = status;
    state.models = registry.models;
    render(registry);
  } catch (error) {
    pollFailed(error);
  }
}

async function refreshBackends() {
  try {
    state.backends = await api.get("/backends");
    render();
  } catch (error) {
    pollFailed(error);
  }
}

async function refreshFigures() {
  if (document.hidden && state.figures) return;
  try {
    state.figures = await api.get("/metrics");
    charts.forEach((chart) => chart.draw(state.figures));
  } catch (error) {
    pollFailed(error);
  }
}

function engineLabel(name) {
  const engine = state.backends && state.backends.engines.find((candidate) => candidate.name === name);
  return engine ? engine.label : name;
}

function render(registry = null) {
  const status = state.status;
  if (!status) return;
  const health = status.ready ? "ready" : status.failure ? `failed: ${status.failure}` : status.stage;
  setText(
    byId("server-line"),
    `${health} · ${engineLabel(status.engine)} · up ${duration(status.uptime_seconds)} · memory ${mib(status.process_rss_bytes)}`,
  );
  byId("server-line").dataset.ready = String(status.ready);
  cards.update(state.backends, status);
  table.update(state.models);
  testBox.update(status, state.models);
  if (registry) setText(byId("registry-line"), `Registry: ${registry.registry.path} (${registry.registry.source})`);
}

// ---- actions --------------------------------------------------------------------------------

async function switchEngine(engine) {
  cards.pending = { engine: engine.name, from: state.status.engine, since: Date.now() };
  render();
  notify(`Switching ${state.status.default_model} to ${engine.label}…`);
  try {
    const answer = await api.post("/engine", { engine: engine.name });
    if (answer.state === "loaded") notify(`${answer.model} now runs on ${engineLabel(answer.to)} (loaded in ${duration(answer.load_seconds)}).`);
    else notify(`${answer.model} could not start on ${engineLabel(answer.to)}: ${answer.failure}`, "error");
  } catch (error) {
    notify(`The switch failed: ${error.message}`, "error");
  } finally {
    cards.pending = null;
    await Promise.all([refresh(), refreshBackends()]);
  }
}

async function toggleModel(model) {
  const action = model.state === "loaded" ? "unload" : "load";
  table.busy.add(model.alias);
  render();
  notify(`${action === "load" ? "Loading" : "Unloading"} ${model.alias}…`);
  try {
    const answer = await api.post(`/models/${encodeURIComponent(model.alias)}/${action}`);
    notify(action === "load" ? `${answer.alias} loaded on ${engineLabel(answer.engine)} in ${duration(answer.load_seconds)}.` : `${answer.alias} unloaded; the server now uses ${mib(answer.process_rss_bytes)}.`);
  } catch (error) {
    notify(`${model.alias}: ${error.message}`, "error");
  } finally {
    table.busy.delete(model.alias);
    await refresh();
  }
}

function editModel(model, opener) {
  const kind = state.backends && state.backends.engines.find((engine) => engine.name === model.configured_engine);
  if (!kind) return notify("The engine list has not arrived yet; try again in a moment.", "error");
  editor.open(model, kind, opener);
}

async function applyChanges(alias, changes) {
  table.busy.add(alias);
  render();
  try {
    const answer = await api.put(`/models/${encodeURIComponent(alias)}`, changes);
    const how = answer.reloaded ? "reloaded" : answer.state === "failed" ? `saved, but it failed to load: ${answer.failure}` : "saved";
    notify(`${answer.updated}: ${how}.`, answer.state === "failed" ? "error" : "info");
    return answer;
  } finally {
    table.busy.delete(alias);
    await refresh();
  }
}

function confirmDelete(model, opener) {
  const dialog = byId("delete-dialog");
  setText(byId("delete-alias"), model.alias);
  dialog.returnValue = "";
  dialog.addEventListener(
    "close",
    async () => {
      if (opener.isConnected) opener.focus();
      if (dialog.returnValue !== "delete") return;
      table.busy.add(model.alias);
      try {
        const answer = await api.remove(`/models/${encodeURIComponent(model.alias)}`);
        notify(`Deleted ${answer.deleted} from ${answer.registry.path}${answer.unloading ? "; it unloads once its requests finish" : ""}.`);
      } catch (error) {
        notify(`${model.alias}: ${error.message}`, "error");
      } finally {
        table.busy.delete(model.alias);
        await refresh();
      }
    },
    { once: true },
  );
  dialog.showModal();
  byId("delete-cancel").focus();
}

// ---- start ----------------------------------------------------------------------------------

byId("sign-in-form").addEventListener("submit", signIn);
byId("sign-out").addEventListener("click", () => signOut("Signed out."));
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && state.timers.length) Promise.all([refresh(), refreshFigures()]);
});
window.addEventListener("resize", () => state.figures && charts.forEach((chart) => chart.draw(state.figures)));
if (api.keys.admin()) {
  api.get("/status").then(enter, (error) => (error.status === 401 ? signOut("The stored key was refused; sign in again.") : error.status === 403 ? showAdminOff() : showSignIn(error.message)));
} else {
  probe();
}
