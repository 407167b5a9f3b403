// Small line charts of the server's own figures over the last minutes (GET /admin/metrics: one
// point per few seconds), drawn on canvas with no library. A point where nothing happened (no
// generation, so no time to first token) is a gap, not a zero.

import { duration, h, mib, setText } from "./dom.js";

export const FIGURES = [
  { key: "requests_per_minute", title: "Requests per minute", format: (v) => v.toFixed(v < 10 ? 1 : 0) },
  { key: "ttft_seconds", title: "Time to first token", format: (v) => duration(v) },
  { key: "tokens_per_second", title: "Tokens per second", format: (v) => v.toFixed(1) },
  { key: "cache_hit_rate", title: "Prompt-cache hit rate", format: (v) => `${Math.round(v * 100)} %`, max: 1 },
  { key: "rss_bytes", title: "Process memory", format: (v) => mib(v) },
];

function color(element, name, fallback) {
  return getComputedStyle(element).getPropertyValue(name).trim() || fallback;
}

export class Chart {
  constructor(container, figure) {
    this.figure = figure;
    this.value = h("span", { class: "figure-value", text: "–" });
    this.peak = h("span", { class: "muted" });
    this.canvas = h("canvas", { role: "img", height: 80 });
    this.element = h(
      "figure",
      { class: "chart", "data-figure": figure.key },
      h("figcaption", {}, h("span", { class: "figure-title", text: figure.title }), this.value),
      this.canvas,
      h("p", { class: "chart-foot" }, h("span", { class: "muted", text: "" }), this.peak),
    );
    this.foot = this.element.querySelector(".chart-foot span");
    container.append(this.element);
  }

  draw(report) {
    const { key, format, title } = this.figure;
    const points = report.points;
    const values = points.map((point) => point[key]).filter((value) => value !== null && value !== undefined);
    const latest = [...points].reverse().find((point) => point[key] !== null && point[key] !== undefined);
    const top = Math.max(this.figure.max ?? 0, ...values, 1e-9);
    setText(this.value, latest ? format(latest[key]) : "–");
    setText(this.peak, values.length ? `highest ${format(Math.max(...values))}` : "nothing yet");
    // The window, or less while the server has not run that long: the chart is never mostly empty.
    const now = Date.now() / 1000;
    const first = points.length ? points[0].time - points[0].seconds : now - report.window_seconds;
    const start = Math.max(now - report.window_seconds, Math.min(first, now - 60));
    const span = now - start;
    const shown = span > 90 ? Math.round(span / 60) * 60 : span; // "last 3 min", not a clock ticking
    setText(this.foot, `last ${duration(shown)}`);
    this.canvas.setAttribute("aria-label", `${title} over the last ${duration(shown)}: ${latest ? `latest ${format(latest[key])}` : "no data yet"}`);

    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(this.canvas.clientWidth, 100);
    const height = this.canvas.clientHeight || 80;
    this.canvas.width = Math.round(width * ratio);
    this.canvas.height = Math.round(height * ratio);
    const context = this.canvas.getContext("2d");
    context.setTransform(ratio, 0, 0, ratio, 0, 0);
    context.clearRect(0, 0, width, height);
    context.strokeStyle = color(this.canvas, "--chart-grid", "#ccc");
    context.lineWidth = 1;
    context.beginPath();
    context.moveTo(0, height - 0.5);
    context.lineTo(width, height - 0.5);
    context.stroke();

    const x = (time) => ((time - start) / span) * (width - 4) + 2;
    const y = (value) => height - 3 - (value / top) * (height - 8);
    const line = color(this.canvas, "--chart-line", "#2563eb");
    context.strokeStyle = line;
    context.fillStyle = line;
    context.lineWidth = 2;
    context.beginPath();
    let drawing = false;
    for (const point of points) {
      const value = point[key];
      if (value === null || value === undefined) {
        drawing = false;
        continue;
      }
      if (drawing) context.lineTo(x(point.time), y(value));
      else context.moveTo(x(point.time), y(value));
      drawing = true;
    }
    context.stroke();
    for (const point of points) {
      if (point[key] === null || point[key] === undefined) continue;
      context.beginPath();
      context.arc(x(point.time), y(point[key]), 2, 0, 2 * Math.PI);
      context.fill();
    }
  }
}
