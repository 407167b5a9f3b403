"""Fast tier: the settings page's files and the admin routes it reads. Every file under web/ is
served at /ui with a strict Content-Security-Policy; the page has no inline script, style or
event handler and loads nothing from another host; /admin/metrics turns the server's own
counters into the charts' points; /admin/propose-model reads a model source as `jarvis
add-model` does; the admin views carry what the page shows (keep-alive, last use, the API key
requirement). The page in a real browser: tests/test_live_ui.py."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from backends.kinds import VLLM
from server.routes.page import WEB_DIR
from service.metrics_history import MetricsHistory, Reading, points
from tests.test_api import CHAT, assert_error, chat_body
from tests.test_runtime_control import EngineShop, start_app

ADMIN = {"Authorization": "Bearer boss"}
WEB_FILES = sorted(path for path in WEB_DIR.rglob("*") if path.is_file())
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}


@pytest.fixture
async def admin_app(tmp_path: Path):
    shop = EngineShop()
    app, client, lifespan = await start_app(tmp_path, shop, admin_key="boss", api_key="inference")
    yield app, client
    await client.aclose()
    await lifespan.__aexit__(None, None, None)


@pytest.fixture
async def page_client(app_factory):
    app = await app_factory()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        yield client


# ---- the files ----------------------------------------------------------------------------------


def test_the_page_has_files() -> None:
    names = {path.relative_to(WEB_DIR).as_posix() for path in WEB_FILES}
    assert {"index.html", "page.css", "js/app.js"} <= names


async def test_ui_redirects_to_the_page_relative_to_the_host(page_client: httpx.AsyncClient) -> None:
    response = await page_client.get("/ui")
    assert response.status_code == 308
    assert response.headers["location"] == "/ui/"  # relative: the Host the browser used stays


@pytest.mark.parametrize("path", WEB_FILES, ids=lambda path: path.relative_to(WEB_DIR).as_posix())
async def test_every_file_is_served_with_a_strict_policy(page_client: httpx.AsyncClient, path: Path) -> None:
    relative = path.relative_to(WEB_DIR).as_posix()
    response = await page_client.get(f"/ui/{relative}")
    assert response.status_code == 200
    assert response.content == path.read_bytes()
    assert response.headers["content-type"].startswith(CONTENT_TYPES[path.suffix])
    policy = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'" and directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert "unsafe" not in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_the_index_is_the_pages_root(page_client: httpx.AsyncClient) -> None:
    response = await page_client.get("/ui/")
    assert response.status_code == 200 and response.text == (WEB_DIR / "index.html").read_text()
    assert "default-src 'self'" in response.headers["content-security-policy"]


async def test_a_missing_file_is_a_404_error_body(page_client: httpx.AsyncClient) -> None:
    assert_error(await page_client.get("/ui/nothing.js"), 404)


async def test_the_host_check_covers_the_page(page_client: httpx.AsyncClient) -> None:
    response = await page_client.get("/ui/", headers={"Host": "rebound.example"})
    assert_error(response, 403, says="not allowed")


class _Inline(HTMLParser):
    """Collects what a strict policy would block: inline scripts, style elements and attributes,
    event-handler attributes, and references to other hosts."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.references: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script":
            self._in_script = True
            if "src" not in names:
                self.problems.append("an inline <script>")
        if tag == "style":
            self.problems.append("a <style> element")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"<{tag} {name}=...>")
            if name in ("src", "href") and value:
                self.references.append(value)

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("script text inline")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False


def test_the_page_has_nothing_inline_and_nothing_from_another_host() -> None:
    parser = _Inline()
    parser.feed((WEB_DIR / "index.html").read_text())
    assert parser.problems == []
    assert parser.references, "the page references its own files"
    for reference in parser.references:
        if reference.startswith("#"):
            continue
        assert "://" not in reference and not reference.startswith("//"), reference
        assert (WEB_DIR / reference).is_file(), f"index.html references {reference}, which web/ does not have"


@pytest.mark.parametrize("path", [p for p in WEB_FILES if p.suffix == ".js"], ids=lambda path: path.name)
def test_scripts_build_no_html_from_text_and_load_nothing_remote(path: Path) -> None:
    source = path.read_text()
    for forbidden in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute(\"style\""):
        assert forbidden not in source, f"{path.name} uses {forbidden}"
    assert not re.search(r"https?://", source), f"{path.name} names another host"
    for imported in re.findall(r'from "(\./[^"]+)"', source):
        assert (path.parent / imported).is_file(), f"{path.name} imports {imported}, which does not exist"


def test_the_key_is_kept_in_session_storage_only() -> None:
    sources = "".join(path.read_text() for path in WEB_FILES if path.suffix == ".js")
    assert "sessionStorage" in sources
    assert "localStorage" not in sources and "document.cookie" not in sources


# ---- what the page reads ------------------------------------------------------------------------


async def test_metrics_give_the_charts_points_from_the_servers_counters(admin_app) -> None:
    app, client = admin_app
    history = MetricsHistory(app.state.client.metrics)  # the app's own one also reads on its clock
    history.take()
    app.state.client.models.default.engine.queue("a", "b", "c")
    response = await client.post(CHAT, json=chat_body(), headers={"Authorization": "Bearer inference"})
    assert response.status_code == 200
    await client.get("/admin/status", headers=ADMIN)  # the operator's own requests are not counted
    history.take()
    (point,) = history.report()["points"]
    assert point["generations"] == 1
    assert round(point["requests_per_minute"] * point["seconds"] / 60) == 1  # the chat request, not the admin call
    assert point["ttft_seconds"] is not None and point["ttft_seconds"] >= 0
    assert point["tokens_per_second"] is not None and point["tokens_per_second"] > 0
    assert point["cache_hit_rate"] == 0.0  # the fake engine reuses no cached tokens
    assert point["rss_bytes"] > 0

    app.state.metrics_history.take()  # its first reading was at the start
    report = (await client.get("/admin/metrics", headers=ADMIN)).json()  # the app's history, through the admin API
    assert report["interval_seconds"] > 0 and report["window_seconds"] >= 300 and report["rss_bytes"] > 0
    assert report["points"] and set(report["points"][-1]) == set(point)
    assert sum(entry["generations"] for entry in report["points"]) == 1
    idle = [entry for entry in report["points"] if not entry["generations"]]
    assert all(entry["ttft_seconds"] is None and entry["tokens_per_second"] is None for entry in idle)


def test_requests_per_minute_are_counted_over_the_last_minute() -> None:
    """A request every 10 s, read every 5 s: 6 a minute once a minute has passed, not 12 then 0."""
    readings = [
        Reading(at=1000.0 + 5 * step, requests=float(step // 2), ttft_sum=0.0, ttft_count=0.0, prompt_tokens=0.0,
                cached_tokens=0.0, generated_tokens=0.0, generation_seconds=0.0, rss_bytes=1)
        for step in range(40)
    ]
    rates = [entry["requests_per_minute"] for entry in points(readings)]
    assert len(rates) == 39
    assert set(rates[12:]) == {6.0}


async def test_metrics_need_the_admin_key(admin_app) -> None:
    _, client = admin_app
    assert_error(await client.get("/admin/metrics"), 401)
    assert_error(await client.get("/admin/metrics", headers={"Authorization": "Bearer inference"}), 401)


async def test_status_says_whether_v1_needs_a_key_and_which_model_is_the_default(admin_app) -> None:
    _, client = admin_app
    status = (await client.get("/admin/status", headers=ADMIN)).json()
    assert status["api_key_required"] is True and status["default_model"] == status["models"][0]["alias"]
    view = (await client.get("/admin/models", headers=ADMIN)).json()["models"][0]
    assert view["keep_alive_seconds"] == 0 and view["effective_context_size"] > 0
    assert view["idle_seconds"] is not None and view["idle_seconds"] >= 0
    defaults = view["server_defaults"]  # what an emptied field goes back to
    assert defaults["context_size"] == view["effective_context_size"] and defaults["keep_alive_seconds"] == 0
    assert defaults["options"]["parallel"] == 4 and "n_threads" not in defaults["options"]  # unset: the engine decides


async def test_propose_model_reads_an_hf_folder(admin_app, tmp_path: Path) -> None:
    _, client = admin_app
    folder = tmp_path / "Qwen2.5-7B-Instruct-AWQ"
    folder.mkdir()
    config = {"model_type": "qwen2", "max_position_embeddings": 32768, "torch_dtype": "float16", "quantization_config": {"quant_method": "awq"}}
    (folder / "config.json").write_text(json.dumps(config))
    response = await client.post("/admin/propose-model", headers=ADMIN, json={"source": str(folder), "context_size": 4096})
    assert response.status_code == 200, response.text
    proposal = response.json()
    assert proposal["entry"]["engine"] == "vllm" and proposal["entry"]["options"] == {"quantization": "awq"}
    assert proposal["entry"]["context_size"] == 4096 and proposal["detected"]["quantization"] == "awq"
    listing = (await client.get("/admin/models", headers=ADMIN)).json()["models"]
    assert all(model["alias"] != proposal["entry"]["alias"] for model in listing), "proposing writes nothing"


async def test_propose_model_refuses_what_it_cannot_read(admin_app, tmp_path: Path) -> None:
    _, client = admin_app
    missing = await client.post("/admin/propose-model", headers=ADMIN, json={"source": str(tmp_path / "none.gguf")})
    assert_error(missing, 400, param="source", says="no such file")
    assert_error(await client.post("/admin/propose-model", headers=ADMIN, json={"source": "x", "engine": "gpt"}), 400, param="engine")
    assert_error(await client.post("/admin/propose-model", headers=ADMIN, json={}), 400, param="source")
    assert_error(await client.post("/admin/propose-model", json={"source": "x"}), 401)


def test_option_declarations_carry_bounds_and_choices_for_the_form() -> None:
    options = {option["name"]: option for option in (o.describe() for o in VLLM.options)}
    assert options["gpu_memory_utilization"]["bounds"] == {"gt": 0, "le": 1}
    assert options["dtype"]["choices"] == ["auto", "half", "float16", "bfloat16", "float", "float32"]
    assert "choices" not in options["max_model_len"] and options["max_model_len"]["bounds"] == {"ge": 256}
