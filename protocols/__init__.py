"""Protocol adapters, one package each: OpenAI (chat, completions, embeddings), OpenAI Responses,
Anthropic Messages and the Ollama API. An adapter turns its wire request into the core's
`GenerationInput`, renders the core's events in its wire format and its errors in its error
body. It knows nothing of engines."""
