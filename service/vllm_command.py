"""Turn a pasted `vllm serve` command line into the equivalent models.yaml entry and .env lines.

Accepted forms: `vllm serve MODEL ...`, `/path/to/vllm serve ...`, `serve ...`, the arguments
alone, `python -m vllm.entrypoints.openai.api_server --model MODEL ...`, leading `VAR=value`
assignments, backslash-continued lines, quoted values, `--flag value` and `--flag=value`, dashes or
underscores in names, boolean flags and their `--no-` forms. Flags without an equivalent here are
returned verbatim in `unmapped`; nothing is dropped."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from pydantic import ValidationError

from backends.descriptor import EngineOption
from backends.kinds import VLLM
from service.model_registry import ModelEntry
from service.settings import env_name
from service.shell_words import ShellSyntaxError, Word, split_words


class CommandParseError(ValueError):
    """The command cannot be converted; the message says where and why."""


@dataclass
class ParsedCommand:
    entry: dict[str, Any]
    env_lines: list[str]
    unmapped: list[str] = field(default_factory=list)


Converter = Callable[[str, str], Any]


def _integer(flag: str, value: str) -> int:
    """vLLM's human-readable integers: 8192, 8k (×1000), 8K (×1024), 1m, 1M."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgG]?)", value.strip())
    if not match:
        raise CommandParseError(f"{flag} expects a whole number (like 8192 or 8k), got {value!r}")
    multipliers = {"": 1, "k": 1000, "K": 1024, "m": 1000**2, "M": 1024**2, "g": 1000**3, "G": 1024**3}
    number = float(match.group(1)) * multipliers[match.group(2)]
    if number != int(number):
        raise CommandParseError(f"{flag} expects a whole number, got {value!r}")
    return int(number)


def _number(flag: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise CommandParseError(f"{flag} expects a number, got {value!r}") from None


def _text(flag: str, value: str) -> str:
    if not value:
        raise CommandParseError(f"{flag} needs a non-empty value")
    return value


_TRUE_WORDS = {"true", "1", "yes", "on"}
_FALSE_WORDS = {"false", "0", "no", "off"}


def _boolean(flag: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE_WORDS | _FALSE_WORDS:
        return lowered in _TRUE_WORDS
    raise CommandParseError(f"{flag} is a switch; give it alone or as {flag}=true / {flag}=false, not {value!r}")


@dataclass(frozen=True)
class Rule:
    """Where a mapped flag goes: `entry` field, engine `option`, or a server-wide `env` variable."""

    kind: str
    target: str
    convert: Converter
    switch: bool = False


# How a flag's text becomes a value of the option's type.
_READERS: dict[object, Converter] = {bool: _boolean, int: _integer, float: _number}


def _option_rule(option: EngineOption) -> Rule:
    """The rule of an option the vLLM engine kind declares, checked as models.yaml checks it."""
    read = _READERS.get(option.type, _text)

    def convert(flag: str, value: str) -> Any:
        parsed = read(flag, value)
        problem = option.problem(parsed)
        if problem:
            raise CommandParseError(f"{flag} {problem}")
        return parsed

    return Rule("option", option.name, convert, switch=option.type is bool)


# vLLM flag (dashes, no leading --) -> where it goes here. Engine options come from the vLLM
# engine kind's declaration (backends/kinds.py); the rest are entry fields and server settings.
RULES: dict[str, Rule] = {
    "model": Rule("entry", "model", _text),
    "chat-template": Rule("entry", "chat_format", _text),
    "enable-auto-tool-choice": Rule("entry", "tool_support", _boolean, switch=True),
    **{option.flag: _option_rule(option) for option in VLLM.options if option.flag},
    "host": Rule("env", "JARVIS_HOST", _text),
    "port": Rule("env", "JARVIS_PORT", lambda flag, value: str(_integer(flag, value))),
    "api-key": Rule("env", "JARVIS_API_KEY", _text),
}

SHORT_FLAGS = {"tp": "tensor-parallel-size", "pp": "pipeline-parallel-size", "q": "quantization"}

# Unmapped vLLM flags that take no value: knowing them keeps `--trust-remote-code MODEL` from
# reading MODEL as the flag's value.
KNOWN_SWITCHES = frozenset(
    {
        "trust-remote-code", "disable-log-requests", "disable-log-stats", "enable-log-requests",
        "enable-chunked-prefill", "disable-custom-all-reduce", "enable-lora", "disable-sliding-window",
        "disable-frontend-multiprocessing", "enable-prompt-tokens-details", "enable-reasoning",
        "enable-request-id-headers", "disable-fastapi-docs", "enable-sleep-mode", "skip-tokenizer-init",
        "disable-uvicorn-access-log", "enable-server-load-tracking", "enable-force-include-usage",
        "headless", "async-scheduling", "enable-expert-parallel", "return-tokens-as-token-ids",
    }
)

# Variables vLLM reads from the environment that have an option here.
ENVIRONMENT_RULES: dict[str, Rule] = {option.environment: _option_rule(option) for option in VLLM.options if option.environment}

_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*", re.DOTALL)
_NEGATIVE_NUMBER = re.compile(r"-\d+(\.\d+)?")


class _Conversion:
    def __init__(self) -> None:
        self.entry: dict[str, Any] = {}
        self.options: dict[str, Any] = {}
        self.server_env: dict[str, str] = {}
        self.aliases: list[str] = []
        self.unmapped: list[str] = []
        self.model_word: Word | None = None

    def apply(self, rule: Rule, flag: str, value: Any) -> None:
        if rule.kind == "option":
            self.options[rule.target] = value
        elif rule.kind == "env":
            self.server_env[rule.target] = value
        elif rule.target == "tool_support":
            self.entry["tool_support"] = "native" if value else "none"
        elif rule.target == "chat_format" and "{" in value:
            # An inline Jinja template: this server takes a custom chat format as a file path.
            self.unmapped.append(f"{flag} {_shell_quote(value)}")
        else:
            self.entry[rule.target] = value

    def set_model(self, word: Word, source: str) -> None:
        if self.model_word is not None and self.model_word.text != word.text:
            raise CommandParseError(
                f"the model is given twice: {self.model_word.text!r} ({self.model_word.where()}) and "
                f"{word.text!r} ({source}, {word.where()})"
            )
        self.model_word = word


def parse_vllm_command(command: str) -> ParsedCommand:
    try:
        words = split_words(command)
    except ShellSyntaxError as error:
        raise CommandParseError(f"cannot read the command: {error}") from None
    if not words:
        raise CommandParseError("the command is empty; paste a `vllm serve MODEL ...` line")
    conversion = _Conversion()
    arguments = _strip_program(words, conversion)
    _read_arguments(arguments, conversion)
    return _result(conversion)


def _strip_program(words: list[Word], conversion: _Conversion) -> list[Word]:
    """Drop the shell prompt, environment assignments and the program name; return the arguments."""
    index = 0
    if words[index].text == "$":
        index += 1
    while index < len(words) and _ASSIGNMENT.fullmatch(words[index].text):
        name, value = words[index].text.split("=", 1)
        rule = ENVIRONMENT_RULES.get(name)
        if rule is None:
            conversion.unmapped.append(f"{name}={_shell_quote(value)}")
        else:
            conversion.apply(rule, name, rule.convert(name, value))
        index += 1
    rest = words[index:]
    if not rest:
        return rest
    program = PurePath(rest[0].text).name
    if program == "vllm":
        if len(rest) < 2 or rest[1].text != "serve":
            found = f"`vllm {rest[1].text}`" if len(rest) > 1 else "`vllm` alone"
            raise CommandParseError(f"only `vllm serve` commands can be converted, found {found} at {rest[0].where()}")
        return rest[2:]
    if program == "serve":
        return rest[1:]
    if re.fullmatch(r"python[0-9.]*", program) and len(rest) >= 3 and rest[1].text == "-m":
        if not rest[2].text.startswith("vllm.entrypoints"):
            raise CommandParseError(f"`python -m {rest[2].text}` is not vLLM's server ({rest[2].where()})")
        return rest[3:]
    return rest


def _read_arguments(words: list[Word], conversion: _Conversion) -> None:
    index = 0
    while index < len(words):
        word = words[index]
        if not _is_flag(word.text):
            if conversion.model_word is None:
                conversion.set_model(word, "positional")
                index += 1
                continue
            raise CommandParseError(
                f"unexpected argument {word.text!r} at {word.where()}: the model is already {conversion.model_word.text!r}, "
                "and other settings are flags starting with --"
            )
        index = _read_flag(words, index, conversion)


def _is_flag(text: str) -> bool:
    return text.startswith("-") and len(text) > 1 and not _NEGATIVE_NUMBER.fullmatch(text)


def _read_flag(words: list[Word], index: int, conversion: _Conversion) -> int:
    """Consume the flag at `index` (and its value); return the index after it."""
    word = words[index]
    raw_name, has_inline, inline_value = word.text.lstrip("-").partition("=")
    name = raw_name.replace("_", "-")
    if not word.text.startswith("--"):
        name = SHORT_FLAGS.get(name, name)
    if not name:
        raise CommandParseError(f"{word.text!r} at {word.where()} is not a flag name")
    negated = name.startswith("no-") and name[3:] in RULES and RULES[name[3:]].switch
    rule = RULES.get(name[3:] if negated else name)
    display = f"--{name}"

    if name == "served-model-name":
        names, next_index = _values_until_flag(words, index + 1)
        if has_inline:
            names.insert(0, inline_value)
        if not names:
            raise CommandParseError(f"{display} at {word.where()} needs at least one name")
        conversion.aliases = names
        return next_index

    if rule is None:
        takes_value = not has_inline and name not in KNOWN_SWITCHES and not name.startswith("no-")
        if takes_value and index + 1 < len(words) and not _is_flag(words[index + 1].text):
            conversion.unmapped.append(f"{word.text} {_shell_quote(words[index + 1].text)}")
            return index + 2
        conversion.unmapped.append(word.text if not has_inline else f"{word.text.split('=', 1)[0]}={_shell_quote(inline_value)}")
        return index + 1

    if rule.switch:
        value = rule.convert(display, inline_value) if has_inline else True
        conversion.apply(rule, display, (not value) if negated else value)
        return index + 1
    if negated:
        raise CommandParseError(f"--{name} at {word.where()} is not a switch")
    if has_inline:
        raw_value, next_index = inline_value, index + 1
    elif index + 1 < len(words) and not _is_flag(words[index + 1].text):
        raw_value, next_index = words[index + 1].text, index + 2
    else:
        raise CommandParseError(f"{display} at {word.where()} needs a value")
    if rule.target == "model":
        conversion.set_model(Word(raw_value, word.line, word.column), "--model")
        return next_index
    conversion.apply(rule, display, rule.convert(display, raw_value))
    return next_index


def _values_until_flag(words: list[Word], index: int) -> tuple[list[str], int]:
    values: list[str] = []
    while index < len(words) and not _is_flag(words[index].text):
        values.append(words[index].text)
        index += 1
    return values, index


def _result(conversion: _Conversion) -> ParsedCommand:
    if conversion.model_word is None:
        raise CommandParseError("no model: give it right after `serve` (vllm serve MODEL) or with --model MODEL")
    model = conversion.model_word.text
    alias = conversion.aliases[0] if conversion.aliases else _default_alias(model)
    entry: dict[str, Any] = {"alias": alias, "engine": "vllm", "model": model}
    if conversion.aliases[1:]:
        entry["aliases"] = conversion.aliases[1:]
    entry.update(conversion.entry)
    if conversion.options:
        entry["options"] = dict(conversion.options)
    try:
        ModelEntry(**entry)
    except ValidationError as error:
        problem = error.errors()[0]
        raise CommandParseError(f"the converted entry is not valid: {'.'.join(map(str, problem['loc']))}: {problem['msg']}") from None
    return ParsedCommand(entry=entry, env_lines=_env_lines(conversion, entry), unmapped=conversion.unmapped)


def _default_alias(model: str) -> str:
    """`Qwen/Qwen2.5-0.5B-Instruct` -> `Qwen2.5-0.5B-Instruct`; `/models/x.gguf` -> `x`."""
    name = PurePath(model.rstrip("/")).name or model
    return name.removesuffix(".gguf")


def _env_lines(conversion: _Conversion, entry: dict[str, Any]) -> list[str]:
    values: dict[str, str] = {"JARVIS_INFERENCE_ENGINE": "vllm", "JARVIS_MODEL_NAME": entry["model"]}
    if conversion.aliases:
        values["JARVIS_MODEL_ALIAS"] = ",".join(conversion.aliases)
    for name in ("chat_format", "tool_support"):
        if name in entry:
            values[f"JARVIS_{name.upper()}"] = entry[name]
    for name, value in conversion.options.items():
        setting = VLLM.setting_name(VLLM.option(name))  # type: ignore[arg-type]
        values[env_name(setting)] = str(value).lower() if isinstance(value, bool) else str(value)
    values.update(conversion.server_env)
    return [f"{name}={_dotenv_quote(value)}" for name, value in values.items()]


def _dotenv_quote(value: str) -> str:
    if value and not re.search(r"[\s#'\"\\$]", value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _shell_quote(value: str) -> str:
    if value and re.fullmatch(r"[\w@%+=:,./-]+", value):
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"
