// Element building and formatting shared by the page's parts. Text from the server (model
// names, error messages) always goes in as text nodes, never parsed as markup.

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (typeof value === "function") element.addEventListener(name.replace(/^on/, ""), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  element.append(...children.flat(Infinity).filter((child) => child !== null && child !== undefined));
  return element;
}

export function byId(id) {
  return document.getElementById(id);
}

export function setText(element, text) {
  const value = text === null || text === undefined ? "" : String(text);
  if (element.textContent !== value) element.textContent = value;
}

export function show(element, visible) {
  element.hidden = !visible;
}

export function mib(bytes) {
  return bytes === null || bytes === undefined ? "–" : `${Math.round(bytes / 2 ** 20)} MiB`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return `${(seconds * 1000).toFixed(0)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(seconds / 60);
  const rest = Math.floor(seconds % 60);
  if (minutes < 60) return rest ? `${minutes} min ${String(rest).padStart(2, "0")} s` : `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, "0")} min`;
}

export function ago(seconds) {
  return seconds === null || seconds === undefined ? "never" : `${duration(seconds)} ago`;
}

export function keepAlive(seconds) {
  return !seconds ? "never unloads" : `unloads after ${duration(seconds)} idle`;
}

// Shown once per engine kind and option: "gpu_memory_utilization" -> "gpu memory utilization".
export function label(name) {
  return name.replaceAll("_", " ");
}
