"""What each kind of upstream server speaks, one small descriptor each: where it tokenizes, what
its /v1/completions takes (token ids or text), which fields carry an output constraint and the
sampling, and how it describes its model. The remote engine reads only these."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from backends.base import ConstraintSpec, EngineError, GenerationRequest, SamplingParams

JSON = dict[str, Any]


class UpstreamHTTP(Protocol):
    """The calls a flavour makes while reading an upstream's facts (`backends.remote.upstream`)."""

    async def get_json(self, path: str) -> JSON | None:
        """GET path (from the server's root); None for a 404."""

    async def post_json(self, path: str, body: JSON) -> JSON | None:
        """POST path (from the server's root); None for a 404."""


@dataclass(frozen=True)
class ModelFacts:
    """What an upstream says about its model; None where it does not say (the entry decides)."""

    model_id: str
    context_length: int | None = None
    architecture: str = ""
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    special_tokens: frozenset[str] = frozenset()
    vocab_size: int = 0
    embeddings: bool = False


@dataclass(frozen=True)
class RemoteConstraint:
    """A constraint as upstreams take it: the spec (structured outputs) and, for servers that
    take only GBNF (llama-cpp-python), the grammar made from it."""

    spec: ConstraintSpec
    gbnf: str | None = None


@dataclass(frozen=True)
class Flavour:
    name: str
    label: str
    health_path: str  # answers 200 when the server serves
    tokenize_path: str
    tokenize_body: Callable[[str, bool, bool], JSON]  # (text, add_bos, special) -> body
    detokenize_path: str
    detokenize_body: Callable[[list[int]], JSON]
    detokenized_key: str
    facts: Callable[[UpstreamHTTP, str], Awaitable[ModelFacts]]  # (http, configured model) -> facts
    token_prompts: bool  # /v1/completions takes the prompt as token ids (else as text)
    sampling: Callable[[SamplingParams], JSON]
    constraint: Callable[[RemoteConstraint], JSON]  # the compiled constraint -> request fields
    takes_gbnf_only: bool = False  # JSON schemas go as GBNF (made here)
    stop_token_ids: bool = False  # told the turn-end token ids to stop on (vLLM renders no turn ends itself)
    # Takes the conversation itself at /v1/chat/completions (a chat-only API): no token ids, no
    # template here; its server parses tool calls (backends.remote.chat).
    messages: bool = False
    # Tokenizes special-token text as plain text on request (else such text is not guarded).
    splits_special: bool = False
    # Adds BOS whatever it is told: add_bos=False strips the BOS prefix it adds.
    always_adds_bos: bool = False
    extra: Callable[[GenerationRequest], JSON] = field(default=lambda request: {})
    stream_options: JSON = field(default_factory=lambda: {"include_usage": True})


# ---- sampling and constraints -------------------------------------------------------------------


def _common_sampling(sampling: SamplingParams) -> JSON:
    body: JSON = {
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "top_k": sampling.top_k,
        "min_p": sampling.min_p,
        "presence_penalty": sampling.presence_penalty,
        "frequency_penalty": sampling.frequency_penalty,
    }
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    return body


def _llama_sampling(sampling: SamplingParams) -> JSON:
    return {**_common_sampling(sampling), "repeat_penalty": sampling.repeat_penalty}


def _vllm_sampling(sampling: SamplingParams) -> JSON:
    return {**_common_sampling(sampling), "repetition_penalty": sampling.repeat_penalty}


def _structured_outputs(constraint: RemoteConstraint) -> JSON:
    """vLLM's `structured_outputs` (this server reads the same field)."""
    spec = constraint.spec
    if spec.kind == "grammar":
        return {"structured_outputs": {"grammar": spec.grammar}}
    return {"structured_outputs": {"json": spec.schema}}


def _gbnf(constraint: RemoteConstraint) -> JSON:
    """llama.cpp's `grammar` (RemoteEngine.compile_constraint made it)."""
    return {"grammar": constraint.gbnf} if constraint.gbnf else {}


# ---- model facts ---------------------------------------------------------------------------------


async def _jarvis_facts(http: UpstreamHTTP, model: str) -> ModelFacts:
    info = await http.get_json(f"/tokenizer_info?model={model}" if model else "/tokenizer_info")
    described = (info or {}).get("jarvis")
    if not isinstance(described, dict):
        raise EngineError("it has no Jarvis /tokenizer_info; is it another kind of server? Set its flavour")
    return ModelFacts(
        model_id=described.get("model_id") or model,
        context_length=described.get("context_length"),
        architecture=described.get("architecture") or "",
        chat_template=info.get("chat_template") if info else None,
        bos_token=described.get("bos_token") or "",
        eos_token=described.get("eos_token") or "",
        special_tokens=frozenset(described.get("special_tokens") or ()),
        vocab_size=int(described.get("vocab_size") or 0),
        embeddings=bool((described.get("capabilities") or {}).get("embeddings")),
    )


def _token_text(value: object) -> str:
    if isinstance(value, dict):  # a serialised AddedToken
        return str(value.get("content") or "")
    return str(value or "")


async def _vllm_facts(http: UpstreamHTTP, model: str) -> ModelFacts:
    listing = await http.get_json("/v1/models") or {}
    cards = [card for card in listing.get("data", []) if isinstance(card, dict)]
    card = next((card for card in cards if card.get("id") == model), cards[0] if cards and not model else None)
    if card is None:
        served = ", ".join(str(card.get("id")) for card in cards) or "none"
        raise EngineError(f"it does not serve the model {model!r} (it serves: {served}); set the entry's model to one of them")
    # Only with `vllm serve --enable-tokenizer-info-endpoint` (a managed vLLM has it).
    info = await http.get_json("/tokenizer_info") or {}
    added = info.get("added_tokens_decoder") or {}
    specials = {_token_text(token) for token in added.values() if isinstance(token, dict) and token.get("special")}
    return ModelFacts(
        model_id=str(card.get("id")),
        context_length=card.get("max_model_len"),
        chat_template=info.get("chat_template"),
        bos_token=_token_text(info.get("bos_token")),
        eos_token=_token_text(info.get("eos_token")),
        special_tokens=frozenset(text for text in specials if text),
    )


async def _chat_facts(http: UpstreamHTTP, model: str) -> ModelFacts:
    from backends.remote.chat import COUNTING_TEMPLATE

    listing = await http.get_json("/v1/models") or {}
    served = [str(card.get("id")) for card in listing.get("data", []) if isinstance(card, dict)]
    if model and served and model not in served:
        raise EngineError(f"it does not serve the model {model!r} (it serves: {', '.join(served[:20])})")
    return ModelFacts(model_id=model or (served[0] if served else ""), chat_template=COUNTING_TEMPLATE)


async def _llama_cpp_facts(http: UpstreamHTTP, model: str) -> ModelFacts:
    listing = await http.get_json("/v1/models") or {}
    cards = [card for card in listing.get("data", []) if isinstance(card, dict)]
    return ModelFacts(model_id=str(cards[0].get("id")) if cards else model)


# ---- the flavours --------------------------------------------------------------------------------

VLLM = Flavour(
    name="vllm",
    label="vLLM (vllm serve)",
    health_path="/health",
    tokenize_path="/tokenize",
    tokenize_body=lambda text, add_bos, special: {"prompt": text, "add_special_tokens": add_bos},
    detokenize_path="/detokenize",
    detokenize_body=lambda ids: {"tokens": ids},
    detokenized_key="prompt",
    facts=_vllm_facts,
    token_prompts=True,
    sampling=_vllm_sampling,
    constraint=_structured_outputs,
    stop_token_ids=True,
    extra=lambda request: {"user": request.cache_key} if request.cache_key else {},
    # Usage on every chunk: exact token counts while the answer streams.
    stream_options={"include_usage": True, "continuous_usage_stats": True},
)

JARVIS = Flavour(
    name="jarvis",
    label="Jarvis (this server)",
    health_path="/health",
    tokenize_path="/tokenize",
    tokenize_body=lambda text, add_bos, special: {"prompt": text, "add_special_tokens": add_bos, "split_special_tokens": not special},
    detokenize_path="/detokenize",
    detokenize_body=lambda ids: {"tokens": ids},
    detokenized_key="prompt",
    facts=_jarvis_facts,
    token_prompts=True,
    sampling=_llama_sampling,
    constraint=_structured_outputs,
    splits_special=True,
    # Its prompt cache keeps a conversation's slot by `user`; priority orders its queue.
    extra=lambda request: {
        **({"user": request.cache_key} if request.cache_key else {}),
        **({"priority": request.priority} if request.priority else {}),
    },
)

LLAMA_CPP = Flavour(
    name="llama_cpp",
    label="llama-cpp-python's server",
    # It has no /health, and its model routes wait while an answer is generated (or, by default,
    # cut that answer): its API description answers at once whenever the server is up.
    health_path="/openapi.json",
    tokenize_path="/extras/tokenize",
    tokenize_body=lambda text, add_bos, special: {"input": text},
    detokenize_path="/extras/detokenize",
    detokenize_body=lambda ids: {"tokens": ids},
    detokenized_key="text",
    facts=_llama_cpp_facts,
    token_prompts=False,  # its /v1/completions takes text only
    sampling=_llama_sampling,
    constraint=_gbnf,
    takes_gbnf_only=True,
    always_adds_bos=True,
    stream_options={},  # it sends no usage in streams: tokens are counted by chunk
)

CHAT = Flavour(
    name="chat",
    label="a chat-only API (its /v1/chat/completions)",
    health_path="/v1/models",
    tokenize_path="",
    tokenize_body=lambda text, add_bos, special: {},
    detokenize_path="",
    detokenize_body=lambda ids: {},
    detokenized_key="",
    facts=_chat_facts,
    token_prompts=False,
    sampling=lambda sampling: {},  # backends.remote.chat builds the whole body
    constraint=lambda constraint: {},
    messages=True,
)

FLAVOURS: dict[str, Flavour] = {flavour.name: flavour for flavour in (VLLM, JARVIS, LLAMA_CPP, CHAT)}


async def detect_flavour(http: UpstreamHTTP) -> Flavour:
    """Which kind of server answers (flavour auto): a Jarvis describes itself on /tokenizer_info,
    vLLM owns its model cards, llama-cpp-python has /extras/tokenize."""
    info = await http.get_json("/tokenizer_info")
    if isinstance(info, dict) and isinstance(info.get("jarvis"), dict):
        return JARVIS
    listing = await http.get_json("/v1/models") or {}
    if any(isinstance(card, dict) and card.get("owned_by") == "vllm" for card in listing.get("data", [])):
        return VLLM
    if await http.post_json("/extras/tokenize", {"input": ""}) is not None:
        return LLAMA_CPP
    raise EngineError("it is none of the servers this one knows (vllm serve, Jarvis, llama-cpp-python); set its flavour")
