"""`jarvis doctor`: is this machine ready to serve the configured models? Each check says what it
found and, when it fails, what to do. A check fails only for what the configured models need;
anything else is a warning. Engines are never imported here: llama.cpp decodes in a child
process (backends.llama_cpp_build's check), vLLM is imported in one."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from backends import ENGINE_KINDS, choose_engine, engine_kind, probe
from backends.kinds import model_format
from backends.remote.config import UpstreamConfig, UpstreamConfigError, upstream_configs
from service.gguf_metadata import GGUFError, read_gguf
from service.model_files import ModelFileError, hf_cached_snapshot, packaged_model_path
from service.model_registry import ModelEntry, RegistryError, load_registry, registry_path
from service.settings import Settings, SettingsError, load_settings

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass, warn, fail, skip
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Context:
    env_file: Path | None
    decode: bool  # decode a few tokens with llama.cpp (a few seconds)
    settings: Settings | None = None
    entries: list[ModelEntry] = field(default_factory=list)

    def engines_needed(self) -> set[str]:
        if self.settings is not None and self.settings.inference_engine == "fallback":
            return set(ENGINE_KINDS)  # any of them may end up serving
        return {entry.engine for entry in self.entries}


CheckFunction = Callable[[Context], Iterator[Check]]


def _settings(context: Context) -> Iterator[Check]:
    try:
        context.settings = load_settings(check_registry=False, _env_file=context.env_file)
    except SettingsError as error:
        yield Check("settings", FAIL, str(error), f"fix that line in {context.env_file or '.env'} (see .env.example)")
        return
    where = context.env_file if context.env_file and context.env_file.is_file() else "defaults and the environment (no .env file)"
    yield Check("settings", PASS, f"read from {where}")
    try:
        context.entries = load_registry(context.settings)
    except RegistryError as error:
        yield Check("model registry", FAIL, str(error), "fix that entry and field (README: models.yaml)")
        return
    path = registry_path(context.settings)
    names = ", ".join(f"{entry.alias} ({entry.engine})" for entry in context.entries)
    yield Check("model registry", PASS, f"{names} from {path or 'the model of .env'}")
    engine, reason = choose_engine(context.settings.inference_engine)
    yield Check("engine choice", PASS, f"{engine}: {reason}")


def _python(context: Context) -> Iterator[Check]:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 11):  # noqa: UP036 (the doctor may run under another Python than the venv's)
        yield Check("python", FAIL, f"Python {version}", "install Python 3.11 or newer and run ./run.sh again")
    else:
        yield Check("python", PASS, f"Python {version} ({sys.executable})")


def _compiler(context: Context) -> Iterator[Check]:
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler:
        yield Check("C compiler", PASS, compiler)
        return
    needed = probe.package_version("llama-cpp-python") is None
    yield Check(
        "C compiler", FAIL if needed else WARN, "none found (cc, gcc, clang)",
        "install one (Debian/Ubuntu: apt-get install build-essential); llama-cpp-python is built from source with it",
    )


def _llama_cpp(context: Context) -> Iterator[Check]:
    needed = "llama_cpp" in context.engines_needed()
    level = FAIL if needed else WARN
    settings = context.settings
    if settings is None:
        return
    report = probe.llama_cpp_report(settings.cache_dir)
    if not report["installed"]:
        yield Check("llama.cpp", level, "llama-cpp-python is not installed", "run ./run.sh, which builds it for this CPU")
        return
    features = ", ".join(report["cpu_features"]) or "unknown (not checked yet)"  # type: ignore[arg-type]
    yield Check("llama.cpp build", PASS, f"llama-cpp-python {report['version']}, {report['build_profile'] or 'unrecorded'} build; CPU features: {features}")
    if not context.decode:
        yield Check("llama.cpp decode", SKIP, "skipped (--no-decode)")
        return
    from backends.llama_cpp_build import Installer, describe_exit

    try:
        model = packaged_model_path(settings.cache_dir)
    except ModelFileError as error:
        yield Check("llama.cpp decode", level, str(error), "run ./run.sh, which installs the packaged model")
        return
    result = Installer(settings.cache_dir).smoke(model)
    decoded = next((line for line in result.stdout.splitlines() if line.startswith("decoded:")), "")
    if result.returncode == 0:
        yield Check("llama.cpp decode", PASS, f"{model.name} in a child process: {decoded}")
    else:
        yield Check(
            "llama.cpp decode", level, f"decoding {model.name} in a child process was {describe_exit(result.returncode)}",
            "run ./run.sh: its check rebuilds llama-cpp-python with portable CPU flags when the tuned build crashes",
        )


def _vllm(context: Context) -> Iterator[Check]:
    needed = "vllm" in context.engines_needed()
    report = probe.vllm_report()
    gpus = probe.gpus()
    gpu_text = ", ".join(f"{gpu.name} ({gpu.memory_total_mib} MiB, {gpu.memory_used_mib} used)" for gpu in gpus) or "none"
    if gpus or not needed:
        yield Check("GPUs", PASS, gpu_text)
    else:
        yield Check("GPUs", WARN, gpu_text, "vLLM runs on CPU (its CPU build) here: slower than on a GPU")
    if not report["installed"]:
        if needed:
            yield Check("vLLM", FAIL, "not installed, and a configured model uses it", "run ./run.sh: it installs vLLM when .env or models.yaml asks for it")
        else:
            yield Check("vLLM", SKIP, "not installed; no configured model needs it")
        return
    detail = f"{report['distribution']} {report['version']}, {report['build']} build, torch {report['torch']}"
    if report["build"] == "cpu" and gpus:
        yield Check("vLLM build", WARN, f"{detail}, though a GPU is present", "remove .venv's vLLM and run ./run.sh to install the CUDA build")
    if not needed:
        yield Check("vLLM", PASS, f"{detail} (not imported: no configured model needs it)")
        return
    imported = subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True, text=True, timeout=600)
    if imported.returncode == 0:
        yield Check("vLLM", PASS, f"{detail}; imports")
    else:
        last = (imported.stderr.strip().splitlines() or ["no output"])[-1]
        yield Check("vLLM", FAIL, f"{detail}; import fails: {last}", "if it names torchvision: .venv/bin/pip uninstall -y torchvision torchaudio torchcodec")


def _model_files(context: Context) -> Iterator[Check]:
    settings = context.settings
    for entry in context.entries if settings else []:
        name = f"model {entry.alias}"
        if not engine_kind(entry.engine).local:
            continue  # a remote model's name is the upstream's (see the upstream checks)
        if not entry.model:
            try:
                yield Check(name, PASS, f"the packaged model: {packaged_model_path(settings.cache_dir)}")  # type: ignore[union-attr]
            except ModelFileError as error:
                yield Check(name, FAIL, str(error), "run ./run.sh, which installs it")
            continue
        path = Path(entry.model).expanduser()
        if model_format(entry.model) == "gguf":
            try:
                info = read_gguf(path)
            except GGUFError as error:
                yield Check(name, FAIL, str(error), "point the entry's model at a GGUF file (jarvis add-model FILE)")
                continue
            yield Check(name, PASS, f"GGUF {info.architecture} {info.quantization}, context {info.context_length}: {path}")
        elif path.is_dir():
            ok = (path / "config.json").is_file()
            yield Check(name, PASS if ok else FAIL, f"HF folder {path}" + ("" if ok else " without config.json"), None if ok else "give an HF model folder")
        elif entry.model.startswith(("/", "./", "../", "~")):
            yield Check(name, FAIL, f"no such file or folder: {path}", "fix the entry's model path")
        elif hf_cached_snapshot(entry.model) is not None:
            yield Check(name, PASS, f"HF id {entry.model}, in the HF cache")
        else:
            yield Check(name, WARN, f"HF id {entry.model} is not on this machine", "vLLM fetches it from the model hub on its first load; that needs network access")


def _upstreams(context: Context) -> Iterator[Check]:
    """Each remote model's upstreams: answering, or started by this server; their keys set."""
    settings = context.settings
    for entry in context.entries if settings else []:
        kind = engine_kind(entry.engine)
        if kind.local:
            continue
        options = {**settings.engine_defaults(kind), **{key: value for key, value in entry.options.items() if value is not None}}  # type: ignore[union-attr]
        try:
            configs = upstream_configs(options)
        except UpstreamConfigError as error:
            yield Check(f"model {entry.alias}", FAIL, str(error), "set options.base_url or options.upstreams (README: remote models)")
            continue
        for config in configs:
            yield _upstream_check(entry.alias, entry.fallback, config)


def _upstream_check(alias: str, fallback: str | None, config: UpstreamConfig) -> Check:
    name = f"upstream {config.name} ({alias})"
    if config.api_key_env and not config.api_key():
        return Check(name, FAIL, f"the variable {config.api_key_env} (api_key_env) is not set", f"export {config.api_key_env}=<the upstream's key>")
    if config.launch is not None:
        return Check(name, PASS, f"started by this server when {alias} loads ({config.launch.engine}, via {config.launch.via})")
    headers = {"Authorization": f"Bearer {config.api_key()}"} if config.api_key() else {}
    try:
        answer = httpx.get(f"{config.root}/health", headers=headers, timeout=3)
        if answer.status_code == 404:  # llama-cpp-python's server has no /health
            answer = httpx.get(f"{config.base_url}/models", headers=headers, timeout=3)
    except httpx.HTTPError as error:
        problem = f"{config.base_url} does not answer ({type(error).__name__}: {' '.join(str(error).split()) or 'no detail'})"
        where = f"requests go to its fallback {fallback} meanwhile" if fallback else f"requests for {alias} fail (503) meanwhile"
        return Check(name, WARN, problem, f"start the upstream, or check the address; {where}")
    if answer.status_code == 200:
        return Check(name, PASS, f"{config.base_url} answers")
    return Check(name, WARN, f"{config.base_url} answers {answer.status_code}", "a 503 while it loads its model is normal; 401 means a wrong key")


def _port(context: Context) -> Iterator[Check]:
    settings = context.settings
    if settings is None:
        return
    address = f"{settings.host}:{settings.port}"
    try:
        with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((settings.host, settings.port))
        yield Check("port", PASS, f"{address} is free")
        return
    except OSError as error:
        busy = error
    try:
        health = httpx.get(f"{settings.local_url}/health", timeout=3)
        jarvis = health.headers.get("content-type", "").startswith("application/json") and "status" in health.json()
    except (httpx.HTTPError, ValueError):
        jarvis = False
    if jarvis:
        yield Check("port", PASS, f"{address} is in use by a running Jarvis server (health {health.json().get('status')})")
    else:
        yield Check("port", FAIL, f"cannot listen on {address}: {busy.strerror}", "stop the program using it, or set JARVIS_PORT")


def _keys(context: Context) -> Iterator[Check]:
    settings = context.settings
    if settings is None:
        return
    if settings.admin_key is None:
        yield Check("admin key", WARN, "JARVIS_ADMIN_KEY is unset: the admin API is off", "set it to manage a running server (jarvis status, load, add-model)")
    else:
        yield Check("admin key", PASS, "set, and different from JARVIS_API_KEY")
    if settings.api_key is None and not _is_loopback(settings.host):
        yield Check(
            "inference key", WARN, f"JARVIS_HOST={settings.host} listens beyond this machine and JARVIS_API_KEY is unset: anyone who reaches it can use the model",
            "set JARVIS_API_KEY, or JARVIS_HOST=127.0.0.1",
        )
    else:
        yield Check("inference key", PASS, "set" if settings.api_key else f"unset, and {settings.host} is loopback only")


# In the order they are shown; settings first, as the others read them.
CHECKS: list[tuple[str, CheckFunction]] = [
    ("settings and registry", _settings),
    ("Python", _python),
    ("C compiler", _compiler),
    ("llama.cpp", _llama_cpp),
    ("vLLM and GPUs", _vllm),
    ("model files", _model_files),
    ("upstreams", _upstreams),
    ("port", _port),
    ("keys", _keys),
]


def passed(checks: list[Check]) -> bool:
    return all(check.status != FAIL for check in checks)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
