"""Changes to the model registry: create, change and delete an entry. Each change reads the
file under its lock, edits it, checks the result exactly as a start would read it, writes it
atomically, and (on a server) makes the running models match. The CLI uses the same functions
on the file when no server runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.errors import InvalidRequestError, ModelNotFoundError
from service.model_registry import (
    ModelEntry,
    RegistryError,
    parse_registry_text,
    registry_path,
    validate_entry,
    written_registry_path,
)
from service.registry_file import RegistryFile, entries_node, entry_node, find_entry, patch_node, plain
from service.settings import Settings

if TYPE_CHECKING:
    from service.model_manager import ModelManager, RegistryApplied


@dataclass(frozen=True)
class Edit:
    action: str  # create, update, delete
    alias: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    entries: list[ModelEntry]
    path: Path
    created_file: bool


def registry_file_for(settings: Settings) -> RegistryFile:
    """The file changes go to: the registry in use, or the one a .env-only server writes."""
    return RegistryFile(registry_path(settings) or written_registry_path(settings))


def registry_source(settings: Settings) -> str:
    if settings.models_file is not None:
        return "JARVIS_MODELS_FILE"
    if registry_path(settings) is not None:
        return "written by the admin API (JARVIS_MODELS_FILE is unset)"
    return ".env (no registry file yet; the first change writes one)"


def create_entry(file: RegistryFile, served: list[ModelEntry], raw: object) -> Edit:
    entry = validate_entry(raw, "the new entry")

    def edit(document: Any) -> tuple[str, dict | None, dict | None]:
        if find_entry(document, entry.alias) is not None:
            raise RegistryError(f"field alias: {entry.alias!r} is already an entry", "alias")
        entries_node(document).append(entry_node(entry))
        return entry.alias, None, entry.document()

    return _edit(file, served, "create", edit)


def update_entry(file: RegistryFile, served: list[ModelEntry], alias: str, changes: object) -> Edit:
    if not isinstance(changes, dict) or not changes:
        raise RegistryError("the change must be a non-empty JSON object of entry fields", None)

    def edit(document: Any) -> tuple[str, dict | None, dict | None]:
        index = _index_of(document, alias)
        node = entries_node(document)[index]
        before = plain(node)
        patch_node(node, changes)
        return str(node.get("alias", alias)), before, plain(node)

    return _edit(file, served, "update", edit)


def delete_entry(file: RegistryFile, served: list[ModelEntry], alias: str) -> Edit:
    def edit(document: Any) -> tuple[str, dict | None, dict | None]:
        entries = entries_node(document)
        index = _index_of(document, alias)
        if len(entries) == 1:
            raise RegistryError(f"field alias: {alias!r} is the only entry; a registry needs at least one model", "alias")
        before = plain(entries[index])
        del entries[index]
        return alias, before, None

    return _edit(file, served, "delete", edit)


def _index_of(document: Any, alias: str) -> int:
    index = find_entry(document, alias)
    if index is None:
        raise ModelNotFoundError(alias)
    return index


Editor = Callable[[Any], tuple[str, dict | None, dict | None]]


def _edit(file: RegistryFile, served: list[ModelEntry], action: str, edit: Editor) -> Edit:
    with file.locked():
        created = not file.path.exists()
        document = file.load(served)
        alias, before, after = edit(document)
        text = file.render(document)
        entries = parse_registry_text(text, file.path.name)  # exactly what the next start reads
        file.write(text)
    return Edit(action, alias, before, after, entries, file.path, created)


class RegistryService:
    """Registry changes on a running server: one at a time, each applied to the models served."""

    def __init__(self, settings: Settings, manager: ModelManager) -> None:
        self._settings = settings
        self._manager = manager
        self._lock = asyncio.Lock()

    @property
    def file(self) -> RegistryFile:
        return registry_file_for(self._settings)

    @property
    def source(self) -> str:
        return registry_source(self._settings)

    async def create(self, raw: object) -> tuple[Edit, RegistryApplied]:
        return await self._change(lambda file, served: create_entry(file, served, raw))

    async def update(self, alias: str, changes: object) -> tuple[Edit, RegistryApplied]:
        return await self._change(lambda file, served: update_entry(file, served, alias, changes))

    async def delete(self, alias: str) -> tuple[Edit, RegistryApplied]:
        return await self._change(lambda file, served: delete_entry(file, served, alias))

    async def _change(self, change: Callable[[RegistryFile, list[ModelEntry]], Edit]) -> tuple[Edit, RegistryApplied]:
        async with self._lock:
            served = [model.entry for model in self._manager.models]
            try:
                edit = await asyncio.to_thread(change, self.file, served)
            except RegistryError as error:
                raise InvalidRequestError(str(error), param=error.field) from None
            applied = self._manager.apply_registry(edit.entries)
        # Outside the lock: a reload waits for in-flight requests, and other changes need not.
        await self._manager.settled(applied.reloading)
        return edit, applied
