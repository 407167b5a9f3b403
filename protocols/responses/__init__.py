"""OpenAI Responses API: POST/GET/DELETE /v1/responses."""
