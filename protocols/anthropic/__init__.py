"""Anthropic's Messages API: `POST /v1/messages` (whole or streamed) and `/v1/messages/count_tokens`."""
