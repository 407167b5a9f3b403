"""The native Ollama API (/api/chat, /api/generate, /api/embed, /api/tags, /api/ps, /api/show,
/api/pull, ...) with Ollama's shapes, NDJSON streams and {"error": ...} bodies."""
