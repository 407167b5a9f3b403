// The test box: one chat message to a chosen model through /v1/chat/completions, streamed, as
// any OpenAI client would send it, with its time to first token and decode rate. With
// JARVIS_API_KEY set, /v1 needs that key (the admin key never opens /v1): the box asks for it and
// keeps it for this tab only.

import * as api from "./api.js";
import { byId, duration, setText, show } from "./dom.js";

// The SSE body: `data: {json}` events separated by blank lines, ending with `data: [DONE]`.
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        yield JSON.parse(data);
      }
    }
  }
}

export class TestBox {
  constructor() {
    this.form = byId("test-form");
    this.model = byId("test-model");
    this.keyRow = byId("test-key-row");
    this.key = byId("test-api-key");
    this.message = byId("test-message");
    this.output = byId("test-output");
    this.stats = byId("test-stats");
    this.send = byId("test-send");
    this.stop = byId("test-stop");
    this.key.value = api.keys.api();
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.run();
    });
    this.message.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.run();
      }
    });
    this.stop.addEventListener("click", () => this.controller && this.controller.abort());
  }

  update(status, models) {
    show(this.keyRow, status.api_key_required);
    const aliases = models.map((model) => model.alias);
    const current = [...this.model.options].map((option) => option.value);
    if (current.join("\n") !== aliases.join("\n")) {
      const chosen = this.model.value || status.default_model;
      this.model.replaceChildren(...aliases.map((alias) => new Option(alias, alias, false, alias === chosen)));
    }
  }

  async run() {
    if (this.controller) return;
    const message = this.message.value.trim();
    if (!message) {
      setText(this.stats, "Type a message first.");
      this.message.focus();
      return;
    }
    api.keys.setApi(this.key.value.trim());
    const headers = { "Content-Type": "application/json" };
    if (api.keys.api()) headers.Authorization = `Bearer ${api.keys.api()}`;
    const body = {
      model: this.model.value,
      messages: [{ role: "user", content: message }],
      max_tokens: Number(byId("test-max-tokens").value) || 64,
      stream: true,
      stream_options: { include_usage: true },
    };
    this.controller = new AbortController();
    this.send.disabled = true;
    this.stop.disabled = false;
    setText(this.output, "");
    this.output.dataset.state = "streaming";
    setText(this.stats, `Waiting for ${body.model}…`);
    const sent = performance.now();
    let first = null;
    let last = null;
    let usage = null;
    let finish = null;
    try {
      const response = await fetch(api.url("/v1/chat/completions"), {
        method: "POST", headers, body: JSON.stringify(body), signal: this.controller.signal, cache: "no-store",
      });
      if (!response.ok) {
        const error = await api.errorOf(response);
        if (error.status === 401) {
          show(this.keyRow, true);
          throw new Error(`${error.message}. Type the server's JARVIS_API_KEY in "API key" (it is not the admin key).`);
        }
        throw error;
      }
      for await (const chunk of events(response)) {
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        const choice = chunk.choices && chunk.choices[0];
        if (!choice) continue;
        const text = (choice.delta && (choice.delta.content || choice.delta.reasoning_content)) || "";
        if (text) {
          first = first ?? performance.now();
          last = performance.now();
          this.output.append(text);
          setText(this.stats, `Streaming… time to first token ${duration((first - sent) / 1000)}`);
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      this.output.dataset.state = "done";
      setText(this.stats, this.summary(sent, first, last, usage, finish));
    } catch (error) {
      this.output.dataset.state = "failed";
      setText(this.stats, error.name === "AbortError" ? "Stopped." : error.message);
    } finally {
      this.controller = null;
      this.send.disabled = false;
      this.stop.disabled = true;
    }
  }

  summary(sent, first, last, usage, finish) {
    const parts = [];
    if (first !== null) parts.push(`time to first token ${duration((first - sent) / 1000)}`);
    const tokens = usage ? usage.completion_tokens : null;
    if (tokens !== null) parts.push(`${tokens} tokens`);
    if (tokens > 1 && last > first) parts.push(`${((tokens - 1) / ((last - first) / 1000)).toFixed(1)} tokens/s`);
    if (finish) parts.push(`finish: ${finish}`);
    return parts.length ? parts.join(" · ") : "No answer.";
  }
}
