"""Fast tier: the security defaults of the HTTP layer (Host check, CORS, docs, keys, body limits,
HEAD, HTTP-level error bodies) and the redaction of secrets from the audit trail and the logs."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import stat
from pathlib import Path

import httpx
import pytest

from server.errors import ErrorDetail, register_error_format
from server.security import is_loopback
from service.audit import KeyIdentity
from service.redaction import REDACTED, RedactingFilter, install_log_redaction, redact
from tests.test_api import CHAT, assert_error, chat_body


def client_of(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


# ---- Host check (DNS rebinding) ----------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:8000", "LOCALHOST.", "127.0.0.1", "127.0.0.1:8000", "192.168.1.20:8000",
     "[::1]:8000", "[fe80::1%eth0]", "::1"],
)
async def test_keyless_server_answers_to_localhost_and_ip_literals(app_factory, host: str) -> None:
    app = await app_factory(allowed_hosts=[])
    async with client_of(app) as client:
        assert (await client.get("/v1/models", headers={"Host": host})).status_code == 200


async def test_keyless_server_refuses_other_dns_names(app_factory, fake_engine) -> None:
    app = await app_factory(allowed_hosts=[])
    async with client_of(app) as client:
        for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example"):
            error = assert_error(await client.get("/v1/models", headers={"Host": host}), 403, says="JARVIS_ALLOWED_HOSTS")
            assert error["code"] == "host_not_allowed"
        refused = await client.post(CHAT, json=chat_body(), headers={"Host": "evil.example"})
        assert_error(refused, 403, says="'evil.example' is not allowed")
        assert "JARVIS_API_KEY" in refused.json()["error"]["message"]
    assert fake_engine.requests == []


async def test_configured_names_and_subdomain_patterns_pass(app_factory) -> None:
    app = await app_factory(allowed_hosts=["jarvis.lan", "*.home.arpa"])
    async with client_of(app) as client:
        for host in ("jarvis.lan", "JARVIS.LAN:8000", "kitchen.home.arpa", "localhost", "10.0.0.2"):
            assert (await client.get("/health", headers={"Host": host})).status_code == 200, host
        for host in ("home.arpa.evil.example", "jarvis.lan.evil.example"):
            assert_error(await client.get("/health", headers={"Host": host}), 403)


async def test_allowed_hosts_setting_reads_comma_separated_words(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.settings import load_settings

    monkeypatch.setenv("JARVIS_ALLOWED_HOSTS", "jarvis.lan, *.home.arpa")
    monkeypatch.setenv("JARVIS_CORS_ORIGINS", "http://ha.local:8123")
    settings = load_settings(_env_file=None)
    assert settings.allowed_hosts == ["jarvis.lan", "*.home.arpa"]
    assert settings.cors_origins == ["http://ha.local:8123"]


async def test_with_an_api_key_the_host_check_is_off_unless_configured(app_factory) -> None:
    key = {"Authorization": "Bearer k"}
    app = await app_factory(api_key="k", allowed_hosts=[])
    async with client_of(app) as client:
        assert (await client.get("/v1/models", headers={**key, "Host": "jarvis.example"})).status_code == 200
    app = await app_factory(api_key="k", allowed_hosts=["jarvis.lan"])
    async with client_of(app) as client:
        assert (await client.get("/v1/models", headers={**key, "Host": "jarvis.lan"})).status_code == 200
        error = assert_error(await client.get("/v1/models", headers={**key, "Host": "jarvis.example"}), 403)
        assert "not in JARVIS_ALLOWED_HOSTS" in error["message"]


async def test_the_refusal_is_in_the_protocol_of_the_path(app_factory) -> None:
    register_error_format("/test-protocol/", lambda detail: {"type": "error", "error": {"message": detail.message}})
    app = await app_factory(allowed_hosts=[])
    async with client_of(app) as client:
        response = await client.get("/test-protocol/anything", headers={"Host": "evil.example"})
    assert response.status_code == 403
    assert response.json()["type"] == "error" and "JARVIS_ALLOWED_HOSTS" in response.json()["error"]["message"]


# ---- CORS and docs ------------------------------------------------------------------------------


async def test_no_cors_headers_by_default(app_factory) -> None:
    app = await app_factory()
    async with client_of(app) as client:
        simple = await client.get("/v1/models", headers={"Origin": "http://evil.example"})
        assert simple.status_code == 200
        assert not any(name.startswith("access-control-") for name in simple.headers)
        preflight = await client.options(
            CHAT, headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert_error(preflight, 405)
        assert "access-control-allow-origin" not in preflight.headers


async def test_cors_only_for_configured_origins(app_factory) -> None:
    app = await app_factory(cors_origins=["http://ha.local:8123"])
    preflight_headers = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}
    async with client_of(app) as client:
        allowed = await client.options(CHAT, headers={"Origin": "http://ha.local:8123", **preflight_headers})
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "http://ha.local:8123"
        simple = await client.get("/v1/models", headers={"Origin": "http://ha.local:8123"})
        assert simple.headers["access-control-allow-origin"] == "http://ha.local:8123"
        refused = await client.options(CHAT, headers={"Origin": "http://evil.example", **preflight_headers})
        assert_error(refused, 400, says="JARVIS_CORS_ORIGINS")
        assert "access-control-allow-origin" not in refused.headers
        other = await client.get("/v1/models", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_docs_are_off_unless_enabled(app_factory) -> None:
    app = await app_factory()
    async with client_of(app) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert_error(await client.get(path), 404, says=path)
    app = await app_factory(api_docs=True)
    async with client_of(app) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await client.get(path)).status_code == 200, path
        assert "/v1/chat/completions" in (await client.get("/openapi.json")).json()["paths"]


# ---- keys ---------------------------------------------------------------------------------------


async def test_admin_key_only_as_bearer_and_inference_key_both_ways(app_factory, tmp_path: Path) -> None:
    app = await app_factory(admin_key="boss", api_key="user", cache_dir=tmp_path, audit_log=tmp_path / "audit.log")
    async with client_of(app) as client:
        assert_error(await client.get("/admin/status", headers={"X-Api-Key": "boss"}), 401, says="Authorization: Bearer")
        assert (await client.get("/admin/status", headers={"Authorization": "Bearer boss"})).status_code == 200
        assert (await client.get("/v1/models", headers={"x-api-key": "user"})).status_code == 200
        assert (await client.get("/v1/models", headers={"Authorization": "Bearer user"})).status_code == 200
        # a client that sends a placeholder Bearer beside the real x-api-key still gets in
        both = {"Authorization": "Bearer unused", "x-api-key": "user"}
        assert (await client.get("/v1/models", headers=both)).status_code == 200
        assert_error(await client.get("/v1/models", headers={"x-api-key": "boss"}), 401, says="x-api-key")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("::", False), ("192.168.1.5", False), ("jarvis.lan", False)],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


async def test_loud_warning_when_open_beyond_loopback_without_a_key(app_factory, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="jarvis.security"):
        await app_factory(host="0.0.0.0")
    warnings = [record.getMessage() for record in caplog.records if record.name == "jarvis.security"]
    assert len(warnings) == 1
    assert "JARVIS_HOST=0.0.0.0" in warnings[0] and "Set JARVIS_API_KEY" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="jarvis.security"):
        await app_factory(host="0.0.0.0", api_key="k")
        await app_factory(host="127.0.0.1")
    assert not [record for record in caplog.records if record.name == "jarvis.security"]


# ---- audit identity and redaction ---------------------------------------------------------------


def test_key_identity_is_an_hmac_with_the_server_secret(tmp_path: Path) -> None:
    secret_file = tmp_path / "audit-secret"
    first = KeyIdentity(None, secret_file)("boss")
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert KeyIdentity(None, secret_file)("boss") == first  # the same secret after a restart
    assert KeyIdentity(None, tmp_path / "other-secret")("boss") != first
    assert KeyIdentity("configured", secret_file)("boss") != first
    assert hashlib.sha256(b"boss").hexdigest()[:12] not in first  # not the unsalted hash


async def test_parse_command_audit_and_logs_carry_no_secrets(app_factory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secrets_in_command = ["sk-proj-abcdefghijklmnop", "hf_abcdefghijklmnop", "s3cr3t-value", "hunter2"]
    command = (
        f"HF_TOKEN={secrets_in_command[1]} DB_PASSWORD={secrets_in_command[3]} vllm serve Qwen/Qwen2.5-0.5B-Instruct "
        f"--api-key {secrets_in_command[2]} --hf-token {secrets_in_command[1]} --max-model-len 8192 "
        f"--served-model-name {secrets_in_command[0]}"
    )
    app = await app_factory(admin_key="boss", cache_dir=tmp_path, audit_log=tmp_path / "audit.log")
    async with client_of(app) as client:
        with caplog.at_level(logging.INFO):
            response = await client.post("/admin/parse-command", headers={"Authorization": "Bearer boss"}, json={"command": command})
    assert response.status_code == 200
    assert response.json()["entry"]["options"]["max_model_len"] == 8192
    audit_text = (tmp_path / "audit.log").read_text()
    audit = json.loads(audit_text)
    assert audit["action"] == "parse-command" and "vllm serve Qwen/Qwen2.5-0.5B-Instruct" in audit["from"]
    assert REDACTED in audit["from"]
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "parse-command" in logged
    for secret in [*secrets_in_command, "boss"]:
        assert secret not in audit_text
        assert secret not in logged


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("vllm serve m --api-key abc123 --port 8000", "abc123"),
        ("vllm serve m --hf-token=hf_zyxwvutsrq", "hf_zyxwvutsrq"),
        ("-H 'Authorization: Bearer opaque-token-1'", "opaque-token-1"),
        ("authorization: basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("using key sk-ant-api03-abcdefghij for upstream", "sk-ant-api03-abcdefghij"),
        ("token hf_abcdefghijklmn loaded", "hf_abcdefghijklmn"),
        ("OPENAI_API_KEY=plainvalue ./run.sh", "plainvalue"),
        ("export HF_TOKEN='quoted value'", "quoted value"),
        ("CLIENT_SECRET=xyz987", "xyz987"),
        ("PASSWORD=hunter2", "hunter2"),
        ("GET /v1/models?api_key=inquery&x=1", "inquery"),
        ('{"x-api-key": "injson"}', "injson"),
    ],
)
def test_redact_hides_each_kind_of_secret(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted
    assert REDACTED in redacted


def test_redact_keeps_ordinary_text() -> None:
    for text in ("max_tokens=512 --max-num-batched-tokens 8192", '{"key": "key-0123abcd", "prompt_tokens": 5}', "a bearer of news"):
        assert redact(text) == text


def test_logging_filter_redacts_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        install_log_redaction()
        install_log_redaction()  # idempotent
        assert sum(isinstance(item, RedactingFilter) for item in handler.filters) == 1
        log = logging.getLogger("tests.redaction")
        log.warning("starting with --api-key %s", "flagvalue")
        log.warning("%s - \"%s %s HTTP/%s\" %d", "1.2.3.4:5", "GET", "/v1/models?api_key=queryvalue", "1.1", 200)
        try:
            raise RuntimeError("upstream refused Authorization: Bearer tracebackvalue")
        except RuntimeError:
            log.exception("call failed")
    finally:
        root.removeHandler(handler)
    written = stream.getvalue()
    assert "GET /v1/models?api_key=[REDACTED]" in written and "call failed" in written
    for secret in ("flagvalue", "queryvalue", "tracebackvalue"):
        assert secret not in written


# ---- request bodies ---------------------------------------------------------------------------


async def test_body_over_the_limit_by_content_length_is_413_before_it_is_read(app_factory, fake_engine) -> None:
    app = await app_factory(max_body_bytes=2048)
    big = json.dumps(chat_body(messages=[{"role": "user", "content": "x" * 4000}])).encode()
    received: list[dict] = []

    async def receive_spy(scope, receive, send):  # records what the app below reads
        async def spying_receive():
            message = await receive()
            received.append(message)
            return message

        await app(scope, spying_receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=receive_spy), base_url="http://t") as client:
        response = await client.post(CHAT, content=big, headers={"Content-Type": "application/json"})
    error = assert_error(response, 413, says="JARVIS_MAX_BODY_BYTES")
    assert f"is {len(big)} bytes" in error["message"] and "at most 2048 bytes" in error["message"]
    assert response.headers["connection"] == "close"
    assert received == []  # refused from the header, not a byte of the body read
    assert fake_engine.requests == []


async def test_streamed_body_over_the_limit_is_413(app_factory, fake_engine) -> None:
    app = await app_factory(max_body_bytes=2048)

    async def chunks():
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}]}'

    async with client_of(app) as client:
        response = await client.post(CHAT, content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(response, 413, says="larger than that")
    assert fake_engine.requests == []


async def test_a_page_posting_a_body_that_is_not_json_gets_415(app_factory) -> None:
    """What a web page can send without a CORS preflight (a form, text/plain) is refused; a
    client that is not a browser (no Origin) may label its JSON as it likes."""
    app = await app_factory()
    async with client_of(app) as client:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
            headers = {"Content-Type": content_type, "Origin": "http://evil.example"}
            response = await client.post(CHAT, content=b"{}", headers=headers)
            assert_error(response, 415, says="Content-Type: application/json")
        ok = await client.post(CHAT, content=json.dumps(chat_body()).encode(), headers={"Content-Type": "application/json; charset=utf-8"})
        assert ok.status_code == 200


# ---- HTTP-level errors and HEAD -----------------------------------------------------------------


async def test_head_works_where_get_does_with_no_body(app_factory) -> None:
    app = await app_factory()
    async with client_of(app) as client:
        for path in ("/health", "/v1/models", "/v1/models/fake-model", "/metrics"):
            get = await client.get(path)
            head = await client.head(path)
            assert head.status_code == get.status_code == 200, path
            assert head.content == b""
            assert head.headers["content-type"] == get.headers["content-type"]
        unknown = await client.head("/nothing-here")
        assert unknown.status_code == 404 and unknown.content == b""
        post_only = await client.head(CHAT)
        assert post_only.status_code == 405 and post_only.content == b""
        assert post_only.headers["allow"] == "POST"


async def test_wrong_method_is_405_with_an_error_body(api) -> None:
    response = await api.get(CHAT)
    assert_error(response, 405, says="Method GET is not allowed on /v1/chat/completions")
    assert response.headers["allow"] == "POST"


def test_error_types_cover_the_http_level_statuses() -> None:
    for status in (403, 404, 405, 408, 413, 415, 431):
        assert ErrorDetail(status, "x").type != "server_error"
