"""Recent responses, kept in memory for `previous_response_id` and `GET /v1/responses/{id}`.

A bounded LRU (JARVIS_RESPONSES_STORE_SIZE entries): each entry is the response object as sent
and the conversation it ends (input and output, without the instructions, which OpenAI does not
carry over to the next response). Used from the event loop only, so it needs no lock."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from core.types import Message
from service.errors import InvalidRequestError, ServiceError


class ResponseNotFoundError(ServiceError):
    status_code = 404
    error_type = "invalid_request_error"

    def __init__(self, response_id: str) -> None:
        super().__init__(f"Response with id '{response_id}' not found.")


@dataclass(frozen=True)
class StoredResponse:
    body: dict[str, Any]
    conversation: tuple[Message, ...]
    cache_key: str | None


class ResponseStore:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, entry: StoredResponse) -> None:
        if self.capacity == 0:
            return
        self._entries[entry.body["id"]] = entry
        self._entries.move_to_end(entry.body["id"])
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def get(self, response_id: str) -> StoredResponse:
        entry = self._entries.get(response_id)
        if entry is None:
            raise ResponseNotFoundError(response_id)
        self._entries.move_to_end(response_id)
        return entry

    def delete(self, response_id: str) -> None:
        if self._entries.pop(response_id, None) is None:
            raise ResponseNotFoundError(response_id)

    def previous(self, response_id: str) -> StoredResponse:
        """The response a request continues; a 400 naming previous_response_id when it is not here."""
        try:
            return self.get(response_id)
        except ResponseNotFoundError:
            raise InvalidRequestError(
                f"Previous response with id '{response_id}' not found. This server keeps the last "
                f"{self.capacity} responses in memory (JARVIS_RESPONSES_STORE_SIZE), not those created with "
                "store: false, deleted or evicted ones, nor any from before it started; send the whole "
                "conversation as input instead.",
                param="previous_response_id",
                code="previous_response_not_found",
            ) from None
