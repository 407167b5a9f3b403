"""The vLLM engine: vLLM's AsyncLLM in this process (its engine core runs in a child process it
spawns). Every request goes straight to vLLM with its own request id, so vLLM's scheduler batches
concurrent requests; deltas stream as they are produced; a request whose consumer goes away is
aborted inside vLLM.

A GGUF model is converted once into an HF folder in the cache (`gguf_to_hf`), because vLLM on CPU
cannot run GGUF and the converted folder also runs on GPU."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from backends import nvidia_gpu_present
from backends.base import (
    ConstraintError,
    ConstraintSpec,
    Delta,
    EngineCapabilities,
    EngineConfig,
    EngineError,
    EngineInfo,
    GenerationRequest,
    SamplingParams,
)
from backends.gguf_to_hf import ConversionError, ensure_hf_folder
from backends.kinds import VLLM
from backends.vllm_embedder import VllmEmbedder
from backends.vllm_environment import prepare_vllm_environment

logger = logging.getLogger(__name__)

# Tokens that end a turn in the chat formats we render; llama.cpp treats them as end-of-generation.
END_OF_TURN_TOKENS = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<|endoftext|>")

# vLLM's finish reasons that end an answer, as the API reports them. Its others ("abort",
# "error") mean vLLM gave up on the request: a failure, never a finished answer.
FINISH_REASONS = {"stop": "stop", "length": "length", "repetition": "stop"}

IMPORT_FIX = (
    "run ./run.sh with JARVIS_INFERENCE_ENGINE=vllm, which installs requirements-vllm.txt and the vLLM build "
    "for this machine; if the error mentions torchvision, run: .venv/bin/pip uninstall -y torchvision torchaudio torchcodec"
)

DEFAULT_CPU_KVCACHE_GB = 1.0  # ~58k tokens of KV for gemma-3-270m

# Engine options (models.yaml / JARVIS_VLLM_*) that pass to vLLM's engine arguments unchanged.
PASSTHROUGH_OPTIONS = tuple(option.name for option in VLLM.options if option.engine_argument)


class VllmEngine:
    name = "vllm"

    def __init__(self, config: EngineConfig) -> None:
        self._config = config
        self._on_stage: Callable[[str], None] = config.on_stage or (lambda stage: None)
        self._llm: Any = None
        self._tokenizer: Any = None
        self._info: EngineInfo | None = None
        self._stop_token_ids: list[int] = []
        self._max_num_seqs = 0
        self._vllm: dict[str, Any] = {}
        self._embedder: VllmEmbedder | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        model = await asyncio.to_thread(self._prepare_model)
        self._on_stage("importing vLLM")
        await asyncio.to_thread(self._import_vllm)
        self._on_stage("loading model in vLLM")
        args = self._engine_args(model)
        try:
            self._llm = await asyncio.to_thread(self._vllm["AsyncLLM"].from_engine_args, args)
        except Exception as error:
            raise EngineError(
                f"vLLM could not load {model}: {type(error).__name__}: {error}. Check JARVIS_MODEL_NAME and the "
                "JARVIS_VLLM_* settings (max_model_len, dtype, memory); the log above has vLLM's own report"
            ) from error
        self._embedder = VllmEmbedder(lambda **overrides: self._engine_args(model, **overrides))
        self._max_num_seqs = self._llm.vllm_config.scheduler_config.max_num_seqs
        self._tokenizer = self._llm.get_tokenizer()
        self._stop_token_ids = self._end_of_turn_ids()
        self._info = EngineInfo(
            model_id=Path(self._config.model).name.removesuffix(".gguf"),
            context_length=self._llm.vllm_config.model_config.max_model_len,
            # HF model_type (a converted gemma3 GGUF is `gemma3_text`); chat_formats knows both namings.
            architecture=self._llm.vllm_config.model_config.hf_config.model_type,
            capabilities=EngineCapabilities(grammar=True, embeddings=True, batching=True),
            chat_template=getattr(self._tokenizer, "chat_template", None),
            bos_token=self._tokenizer.bos_token or "",
            eos_token=self._tokenizer.eos_token or "",
            special_tokens=self._special_tokens(),
            vocab_size=len(self._tokenizer),
        )
        logger.info(
            "vLLM: %s, context %d, up to %d sequences at once", model, self._info.context_length, self._max_num_seqs
        )

    def _prepare_model(self) -> str:
        """The folder or id vLLM loads (a GGUF is converted to an HF folder once)."""
        model = self._config.model
        if not model.endswith(".gguf"):
            return model
        path = Path(model)
        if not path.is_file():
            raise EngineError(f"model file {path} does not exist; set JARVIS_MODEL_NAME to a GGUF file, an HF id or folder")
        self._on_stage("preparing GGUF for vLLM")
        try:
            folder = ensure_hf_folder(path, Path(self._config.cache_dir), self._report_conversion)
        except ConversionError as error:
            raise EngineError(str(error)) from error
        return str(folder)

    def _report_conversion(self, message: str) -> None:
        logger.info("%s", message)
        self._on_stage(message)

    def _import_vllm(self) -> None:
        prepare_vllm_environment()
        try:
            from vllm import SamplingParams as VllmSamplingParams
            from vllm.config import StructuredOutputsConfig
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.inputs import TokensPrompt
            from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams
            from vllm.v1.engine.async_llm import AsyncLLM
        except Exception as error:  # ImportError, or a broken torch extension raising RuntimeError
            raise EngineError(f"vLLM cannot be imported ({type(error).__name__}: {error}); {IMPORT_FIX}") from error
        self._vllm = {
            "AsyncLLM": AsyncLLM,
            "AsyncEngineArgs": AsyncEngineArgs,
            "SamplingParams": VllmSamplingParams,
            "TokensPrompt": TokensPrompt,
            "DELTA": RequestOutputKind.DELTA,
            "StructuredOutputsParams": StructuredOutputsParams,
            "StructuredOutputsConfig": StructuredOutputsConfig,
        }

    def _engine_args(self, model: str, **overrides: Any) -> Any:
        options = self._config.options
        arguments: dict[str, Any] = {name: options[name] for name in PASSTHROUGH_OPTIONS if options.get(name) is not None}
        arguments["max_model_len"] = options.get("max_model_len") or self._config.context_size
        if not nvidia_gpu_present():
            # On CPU, gpu_memory_utilization would reserve that fraction of the machine's RAM;
            # an explicit KV-cache size is what a CPU user means.
            space = options.get("cpu_kvcache_space_gb") or DEFAULT_CPU_KVCACHE_GB
            arguments["kv_cache_memory_bytes"] = int(float(space) * 2**30)  # type: ignore[arg-type]
        # Requests carry a priority (voice before background work); vLLM serves lower values first.
        arguments["scheduling_policy"] = "priority"
        # Compact JSON (see _sampling): vLLM 0.32 reads disable_any_whitespace from the engine's
        # config only, not from a request's, and takes it only with a named backend: xgrammar, the
        # one compile_constraint checks constraints with.
        arguments["structured_outputs_config"] = self._vllm["StructuredOutputsConfig"](backend="xgrammar", disable_any_whitespace=True)
        arguments.update(overrides)
        logger.info("vLLM engine arguments: %s", json.dumps(arguments, default=str))
        return self._vllm["AsyncEngineArgs"](
            model=model, tokenizer=model, disable_log_stats=True, enable_log_requests=False, **arguments
        )

    def _special_tokens(self) -> frozenset[str]:
        decoder = getattr(self._tokenizer, "added_tokens_decoder", {}) or {}
        texts = {token.content for token in decoder.values() if getattr(token, "special", False)}
        texts.update(getattr(self._tokenizer, "all_special_tokens", []) or [])
        return frozenset(text for text in texts if text)

    def _end_of_turn_ids(self) -> list[int]:
        vocab = self._tokenizer.get_vocab()
        ids = {vocab[token] for token in END_OF_TURN_TOKENS if token in vocab}
        if self._tokenizer.eos_token_id is not None:
            ids.add(self._tokenizer.eos_token_id)
        return sorted(ids)

    async def close(self) -> None:
        if self._embedder is not None:
            await self._embedder.close()
        if self._llm is not None:
            llm, self._llm = self._llm, None
            await asyncio.to_thread(llm.shutdown)

    # ---- contract --------------------------------------------------------------------------

    def info(self) -> EngineInfo:
        if self._info is None:
            raise EngineError("the engine is not started")
        return self._info

    def tokenize(self, text: str, *, special: bool = True, add_bos: bool = True) -> list[int]:
        # The converted tokenizer adds BOS exactly when llama.cpp does (see gguf_to_hf).
        encoded = self._tokenizer(text, add_special_tokens=add_bos, split_special_tokens=not special)
        return list(encoded["input_ids"])

    def detokenize(self, token_ids: list[int]) -> str:
        return str(self._tokenizer.decode(token_ids, skip_special_tokens=True))

    def compile_constraint(self, spec: ConstraintSpec) -> ConstraintSpec:
        """Check the constraint with xgrammar, vLLM's structured-output backend, so that one it
        rejects is a 400 before the request reaches vLLM."""
        import xgrammar

        try:
            if spec.kind == "grammar":
                xgrammar.Grammar.from_ebnf(spec.grammar or "")
            else:
                xgrammar.Grammar.from_json_schema(json.dumps(spec.schema), any_whitespace=False)
        except Exception as error:  # xgrammar raises RuntimeError / ValueError with its reason
            raise ConstraintError(f"vLLM's structured outputs reject it: {str(error).strip()[:300]}") from None
        return spec

    def health(self) -> str | None:
        if self._llm is not None and getattr(self._llm, "errored", False):
            return f"the vLLM engine core died: {getattr(self._llm, 'dead_error', 'see the log')}"
        return None

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if self._embedder is None:
            raise EngineError("the engine is not started")
        return await self._embedder.embed([self.tokenize(text) for text in texts])

    def running_requests(self) -> int:
        """Requests vLLM holds right now (running or waiting in its scheduler)."""
        return self._llm.get_num_unfinished_requests() if self._llm is not None else 0

    def stats(self) -> dict[str, int]:
        return {"busy_slots": self.running_requests(), "queue_length": 0, "parallel": self._max_num_seqs}

    def _sampling(self, sampling: SamplingParams) -> Any:
        structured = None
        spec = sampling.constraint
        if isinstance(spec, ConstraintSpec) and spec.kind == "grammar":
            structured = self._vllm["StructuredOutputsParams"](grammar=spec.grammar)
        elif isinstance(spec, ConstraintSpec):
            # Compact JSON: with free whitespace a small model can pad with newlines up to max_tokens.
            structured = self._vllm["StructuredOutputsParams"](json=spec.schema, disable_any_whitespace=True)
        return self._vllm["SamplingParams"](
            n=1,
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            seed=sampling.seed,
            presence_penalty=sampling.presence_penalty,
            frequency_penalty=sampling.frequency_penalty,
            repetition_penalty=sampling.repeat_penalty,
            stop_token_ids=self._stop_token_ids,
            skip_special_tokens=True,
            output_kind=self._vllm["DELTA"],
            structured_outputs=structured,
        )

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        if self._llm is None:
            raise EngineError("the engine is not started")
        prompt = self._vllm["TokensPrompt"](prompt_token_ids=request.prompt_token_ids)
        produced = 0
        stream = self._llm.generate(prompt, self._sampling(request.sampling), request.request_id, priority=-request.priority)
        try:
            async for output in stream:
                completion = output.outputs[0]
                produced += len(completion.token_ids)
                finished = output.finished
                if finished and completion.finish_reason not in FINISH_REASONS:
                    raise _ended_without_answer(completion.finish_reason, request, produced)
                yield Delta(
                    text=completion.text,
                    completion_tokens=produced,
                    finish_reason=FINISH_REASONS[completion.finish_reason] if finished else None,
                    prompt_tokens=len(request.prompt_token_ids),
                    cached_tokens=output.num_cached_tokens or 0,
                )
                if finished:
                    return
        except ValueError as error:  # vLLM validates a request when it is added: the request's fault
            if request.sampling.constraint is not None:
                raise ConstraintError(f"vLLM refused it: {error}") from error
            raise EngineError(f"vLLM refused the request: {error}") from error
        finally:
            # Closing vLLM's generator early aborts the request inside vLLM (AsyncLLM.generate
            # handles GeneratorExit and cancellation by aborting); test_live_vllm checks it.
            await stream.aclose()


def _ended_without_answer(reason: str | None, request: GenerationRequest, produced: int) -> EngineError:
    """The error for a request vLLM ended with "error" or "abort". Under an output constraint,
    "error" is vLLM's grammar matcher refusing the sampled token: every token was masked, which
    happens when the grammar admits no continuation (a schema that refers to itself, say)."""
    if reason == "error" and request.sampling.constraint is not None:
        return ConstraintError(f"no output matches it (vLLM's grammar allowed no next token after {max(produced - 1, 0)} tokens of output)")
    return EngineError(f"vLLM ended the request with {reason!r} after {produced} tokens")
