"""The registry file on disk, edited in place: comments, order and flow style of untouched
entries are kept (ruamel.yaml round trip), a change is written atomically (a temporary file,
fsync, rename; the previous version kept as `<name>.bak`), and changes from several processes
are serialised by a lock file."""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from service.model_registry import ModelEntry, RegistryError

logger = logging.getLogger(__name__)

# Written as `{a: 1, b: 2}` in a new entry, as the README's examples are.
_FLOW_FIELDS = ("aliases", "options", "source")


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


class RegistryFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def backup_path(self) -> Path:
        return self.path.with_name(self.path.name + ".bak")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the registry's lock: one change at a time, across processes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f".{self.path.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # ---- reading and rendering -----------------------------------------------------------

    def load(self, new_entries: list[ModelEntry] | None = None) -> Any:
        """The document to edit. When the file does not exist yet, a new one holding
        `new_entries` (the models served so far)."""
        if not self.path.exists():
            document = CommentedMap(models=CommentedSeq(entry_node(entry) for entry in new_entries or []))
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
            document.yaml_set_start_comment(
                f"Model registry written by the Jarvis admin API on {stamp}, starting from the model of .env.\n"
                "The server reads it at start while JARVIS_MODELS_FILE is unset; delete it to go back to .env's model."
            )
            return document
        try:
            return _yaml().load(self.path.read_text(encoding="utf-8"))
        except (OSError, YAMLError) as error:
            raise RegistryError(f"{self.path}: cannot be read for editing: {' '.join(str(error).split())}") from None

    @staticmethod
    def render(document: Any) -> str:
        buffer = io.StringIO()
        _yaml().dump(document, buffer)
        return buffer.getvalue()

    # ---- writing ---------------------------------------------------------------------------

    def write(self, text: str) -> None:
        """Replace the file with `text` atomically; the previous version becomes the backup.
        A crash at any point leaves either the old file or the new one, never a mix."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.path.parent.glob(f".{self.path.name}*.tmp"):  # left by a crash; we hold the lock
            stale.unlink(missing_ok=True)
        mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o644
        if self.path.exists():
            _atomic_write(self.backup_path, self.path.read_bytes(), mode)
        _atomic_write(self.path, text.encode("utf-8"), mode)
        logger.info("registry written to %s (previous version in %s)", self.path, self.backup_path)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _fsync_directory(path.parent)


def _fsync_directory(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# ---- editing the document ------------------------------------------------------------------


def entries_node(document: Any) -> CommentedSeq:
    """The list of entries: under `models:`, or the document itself when it is a bare list."""
    node = document.get("models") if isinstance(document, dict) else document
    if not isinstance(node, list):
        raise RegistryError("the registry has no 'models:' list to edit")
    return node


def find_entry(document: Any, alias: str) -> int | None:
    for index, node in enumerate(entries_node(document)):
        if isinstance(node, dict) and node.get("alias") == alias:
            return index
    return None


def entry_node(entry: ModelEntry) -> CommentedMap:
    node = CommentedMap(_commented(entry.document()))
    for name in _FLOW_FIELDS:
        if isinstance(node.get(name), CommentedMap | CommentedSeq):
            node[name].fa.set_flow_style()
    return node


def patch_node(node: CommentedMap, changes: dict[str, Any]) -> None:
    """Apply `changes` to an entry in place: a value replaces the field, None removes it, and
    `options` is merged key by key (None removes an option). Untouched fields keep their place
    and comments."""
    for name, value in changes.items():
        if value is None:
            node.pop(name, None)
        elif name == "options" and isinstance(value, dict) and isinstance(node.get("options"), dict):
            options = node["options"]
            for option, option_value in value.items():
                if option_value is None:
                    options.pop(option, None)
                else:
                    options[option] = option_value
            if not options:
                node.pop("options")
        else:
            node[name] = _commented(value)
            if name in _FLOW_FIELDS and isinstance(node[name], CommentedMap | CommentedSeq):
                node[name].fa.set_flow_style()


def _commented(value: Any) -> Any:
    if isinstance(value, dict):
        return CommentedMap((key, _commented(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return CommentedSeq(_commented(item) for item in value)
    return value


def plain(value: Any) -> Any:
    """A ruamel node as plain dicts and lists (for JSON answers)."""
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value
