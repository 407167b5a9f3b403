"""Real tier: the settings page (/ui) in real Chromium (tests/browser.py) against a live server on
the packaged model, with an admin key, an API key and a two-entry registry. Each test drives the
page as an operator would and checks the server's own answer (admin API, registry file, audit
trail) against what the page shows. Last: the switch to vLLM from the page (vLLM tier)."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, expect

from service.model_files import packaged_model_path
from service.settings import Settings
from tests.conftest import ADMIN_KEY, API_KEY, LiveServer, start_live_server, stop_live_server

pytestmark = pytest.mark.real

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# The first switch to vLLM in a session may convert the GGUF and then start vLLM: minutes on 2 cores.
ENGINE_SWITCH_TIMEOUT_MS = 900_000


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory):
    """Listening on every address, so the page can be opened by a LAN address too."""
    folder = tmp_path_factory.mktemp("ui")
    models_file = folder / "models.yaml"
    models_file.write_text(
        "# the settings page's test registry\n"
        "models:\n"
        "  - {alias: primary, engine: llama_cpp, context_size: 1024, options: {parallel: 2}}\n"
        "  - {alias: secondary, engine: llama_cpp, context_size: 1024}\n"
    )
    server = start_live_server(
        folder,
        JARVIS_HOST="0.0.0.0",
        JARVIS_MODELS_FILE=str(models_file),
        JARVIS_ADMIN_KEY=ADMIN_KEY,
        JARVIS_API_KEY=API_KEY,
        JARVIS_AUDIT_LOG=str(folder / "audit.log"),
    )
    server.folder = folder  # type: ignore[attr-defined]
    yield server
    stop_live_server(server)


def admin(server: LiveServer, method: str, path: str, **kwargs) -> dict:
    response = httpx.request(
        method, f"{server.base_url}/admin{path}", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=300, **kwargs
    )
    assert response.status_code < 300, response.text
    return response.json()


def audit_actions(server: LiveServer) -> list[str]:
    return [json.loads(line)["action"] for line in (server.folder / "audit.log").read_text().splitlines()]  # type: ignore[attr-defined]


def new_page(browser, viewport: dict[str, int] = DESKTOP) -> tuple[Page, list[str]]:
    """A page in a fresh context (no storage shared with other tests), and the list its script
    errors and Content-Security-Policy violations go to."""
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("console", lambda message: problems.append(message.text) if "Content Security Policy" in message.text else None)
    return page, problems


@pytest.fixture
def page(browser, ui_server):
    page, problems = new_page(browser)
    yield page
    page.context.close()
    assert problems == [], f"the page broke its Content-Security-Policy or threw: {problems}"


def sign_in(page: Page, base_url: str, key: str = ADMIN_KEY) -> None:
    page.goto(f"{base_url}/ui")
    page.get_by_label("Admin key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def signed_in(page: Page, server: LiveServer) -> Page:
    sign_in(page, server.base_url)
    expect(page.locator("#console")).to_be_visible()
    return page


def row(page: Page, alias: str):
    return page.locator(f'#models-body tr[data-alias="{alias}"]')


def card(page: Page, engine: str):
    return page.locator(f'article[data-engine="{engine}"]')


def fact(page: Page, engine: str, name: str):
    return card(page, engine).locator(f'dd[data-fact="{name}"]')


def model_view(server: LiveServer, alias: str) -> dict:
    return admin(server, "GET", f"/models/{alias}")


# ---- signing in ---------------------------------------------------------------------------------


def test_without_an_admin_key_the_page_explains_how_to_enable_it(browser, llama_server: LiveServer) -> None:
    page, problems = new_page(browser)
    page.goto(f"{llama_server.base_url}/ui")
    off = page.locator("#admin-off")
    expect(off).to_be_visible()
    expect(off).to_contain_text("The admin API is off")
    expect(page.locator("#suggested-key")).to_have_text(re.compile(r"^JARVIS_ADMIN_KEY=[0-9a-f]{48}$"))
    expect(page.locator("#sign-in")).to_be_hidden()
    page.context.close()
    assert problems == []


def test_a_wrong_key_is_refused(page: Page, ui_server: LiveServer) -> None:
    sign_in(page, ui_server.base_url, key="not-the-key")
    expect(page.locator("#sign-in-error")).to_contain_text("Wrong key")
    expect(page.locator("#console")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0


def test_sign_in_shows_both_engine_cards_with_true_states(page: Page, ui_server: LiveServer) -> None:
    signed_in(page, ui_server)
    backends = {engine["name"]: engine for engine in admin(ui_server, "GET", "/backends")["engines"]}
    status = admin(ui_server, "GET", "/status")
    assert status["engine"] == "llama_cpp"
    expect(card(page, "llama_cpp").locator(".badge")).to_have_text("active")
    expect(fact(page, "llama_cpp", "running")).to_have_text("yes")
    expect(fact(page, "llama_cpp", "model")).to_have_text("primary (loaded)")
    expect(fact(page, "llama_cpp", "stage")).to_have_text("ready")
    expect(fact(page, "llama_cpp", "slots")).to_have_text("0 of 2")
    expect(fact(page, "llama_cpp", "queue")).to_have_text("0")
    vllm = backends["vllm"]
    installed = fact(page, "vllm", "installed")
    if vllm["available"]:
        expect(installed).to_have_text(re.compile(rf"^yes: .*{re.escape(vllm['build']['version'])}"))
        expect(card(page, "vllm").get_by_role("button", name="Switch to vLLM")).to_be_enabled()
    else:
        expect(installed).to_have_text(f"no: {vllm['reason']}")
        expect(card(page, "vllm").get_by_role("button", name="Switch to vLLM")).to_be_disabled()
    expect(fact(page, "vllm", "running")).to_have_text("no")
    expect(card(page, "llama_cpp").get_by_role("button")).to_be_hidden()  # no switch to the active engine
    # The remote engine's card: no switch (a model goes remote by its registry entry), its upstreams.
    expect(card(page, "openai").get_by_role("button")).to_be_hidden()
    expect(fact(page, "openai", "upstreams")).to_have_text("–")
    expect(card(page, "openai").locator(".hint")).to_contain_text("engine: openai")
    # The key: in this tab's session storage only, never in the address or a cookie.
    assert page.evaluate("sessionStorage.getItem('jarvis.adminKey')") == ADMIN_KEY
    assert ADMIN_KEY not in page.url and page.context.cookies() == []
    page.reload()
    expect(page.locator("#console")).to_be_visible()  # the same tab keeps it
    other_tab = page.context.new_page()
    other_tab.goto(f"{ui_server.base_url}/ui")
    expect(other_tab.locator("#sign-in")).to_be_visible()  # another tab asks again
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#sign-in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0


# ---- models -------------------------------------------------------------------------------------


def test_load_and_unload_a_model(page: Page, ui_server: LiveServer) -> None:
    signed_in(page, ui_server)
    expect(row(page, "secondary").locator(".state")).to_have_text("unloaded")
    page.get_by_role("button", name="Load secondary").click()
    expect(row(page, "secondary").locator(".state")).to_have_text("loaded", timeout=120_000)
    expect(row(page, "primary").locator(".state")).to_have_text("unloaded")  # one model at a time
    assert model_view(ui_server, "secondary")["state"] == "loaded"
    expect(page.locator("#notice")).to_contain_text("secondary loaded on llama.cpp")
    page.get_by_role("button", name="Unload secondary").click()
    expect(row(page, "secondary").locator(".state")).to_have_text("unloaded", timeout=60_000)
    expect(page.locator("#notice")).to_contain_text("secondary unloaded; the server now uses")
    assert model_view(ui_server, "secondary")["state"] == "unloaded"
    page.get_by_role("button", name="Load primary").click()
    expect(row(page, "primary").locator(".state")).to_have_text("loaded", timeout=120_000)
    actions = audit_actions(ui_server)
    assert [a for a in actions if a.startswith(("load", "unload"))][-3:] == ["load secondary", "unload secondary", "load primary"]


def test_changing_the_context_size_reloads_the_model(page: Page, ui_server: LiveServer) -> None:
    admin(ui_server, "POST", "/models/primary/load")
    signed_in(page, ui_server)
    expect(row(page, "primary").locator(".state")).to_have_text("loaded")
    page.get_by_role("button", name="Edit primary").click()
    editor = page.locator("#edit-section")
    expect(editor.get_by_role("heading", name="Edit primary")).to_be_focused()
    expect(editor.get_by_label("context size")).to_have_value("1024")
    expect(editor.get_by_label("parallel")).to_have_value("2")
    editor.get_by_label("context size").fill("1536")
    editor.get_by_role("button", name="Apply").click()
    expect(page.locator("#notice")).to_have_text("primary: reloaded.", timeout=120_000)
    expect(editor).to_be_hidden()
    expect(row(page, "primary").locator('td[data-label="Context"]')).to_have_text("1536")
    view = model_view(ui_server, "primary")
    assert view["state"] == "loaded" and view["context_length"] == 1536 and view["entry"]["context_size"] == 1536
    assert "context_size: 1536" in (ui_server.folder / "models.yaml").read_text()  # type: ignore[attr-defined]
    assert "update model primary" in audit_actions(ui_server)


def test_a_bad_option_is_shown_at_its_field(page: Page, ui_server: LiveServer) -> None:
    signed_in(page, ui_server)
    page.get_by_role("button", name="Edit secondary").click()
    editor = page.locator("#edit-section")
    editor.get_by_label("parallel").fill("500")
    editor.get_by_role("button", name="Apply").click()
    field = editor.get_by_label("parallel")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_be_focused()
    expect(editor.locator("#edit-options-parallel-error")).to_contain_text("at most 64")
    assert model_view(ui_server, "secondary")["entry"].get("options", {}).get("parallel") is None
    page.keyboard.press("Escape")
    expect(editor).to_be_hidden()


def test_add_a_model_from_a_path_then_delete_it(page: Page, ui_server: LiveServer) -> None:
    gguf = packaged_model_path(Settings(_env_file=None).cache_dir)  # type: ignore[call-arg]
    signed_in(page, ui_server)
    page.get_by_label("A GGUF file or HF model folder").fill(str(gguf))
    page.get_by_role("button", name="Check").click()
    proposal = page.locator("#add-proposal")
    expect(proposal).to_be_visible()
    expect(proposal.get_by_label("alias")).to_have_value("gemma-3-270m-q4_k_m")
    expect(proposal.locator("#add-detected")).to_contain_text("Q4_K_M")
    proposal.get_by_label("alias").fill("from-page")
    proposal.get_by_label("context size").fill("1024")
    proposal.get_by_role("button", name="Add to the registry").click()
    expect(page.locator("#notice")).to_contain_text("Added from-page")
    expect(row(page, "from-page").locator(".state")).to_have_text("unloaded")
    view = model_view(ui_server, "from-page")
    assert view["entry"]["model"] == str(gguf) and view["entry"]["context_size"] == 1024 and view["engine"] == "llama_cpp"

    page.get_by_role("button", name="Delete from-page").click()
    dialog = page.locator("#delete-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(row(page, "from-page")).to_be_visible()
    page.get_by_role("button", name="Delete from-page").click()
    dialog.get_by_role("button", name="Delete").click()
    expect(row(page, "from-page")).to_have_count(0)
    assert httpx.get(f"{ui_server.base_url}/admin/models/from-page", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).status_code == 404
    assert {"create model from-page", "delete model from-page"} <= set(audit_actions(ui_server))


def test_add_a_vllm_model_from_a_command_and_set_its_gpu_memory_with_the_slider(page: Page, ui_server: LiveServer) -> None:
    gguf = packaged_model_path(Settings(_env_file=None).cache_dir)  # type: ignore[call-arg]
    signed_in(page, ui_server)
    page.get_by_label("A GGUF file or HF model folder").fill(f"vllm serve {gguf} --max-model-len 1024 --gpu-memory-utilization 0.5")
    page.get_by_role("button", name="Check").click()
    proposal = page.locator("#add-proposal")
    expect(proposal.locator("#add-entry")).to_contain_text("vllm")
    proposal.get_by_label("alias").fill("on-vllm")
    proposal.get_by_role("button", name="Add to the registry").click()
    expect(row(page, "on-vllm")).to_be_visible()

    page.get_by_role("button", name="Edit on-vllm").click()
    editor = page.locator("#edit-section")
    slider = editor.get_by_label("gpu memory utilization")
    expect(slider).to_have_attribute("type", "range")
    expect(slider).to_have_value("0.5")
    expect(editor.get_by_label("max model len")).to_have_value("1024")
    expect(editor.get_by_label("dtype").locator("option")).to_have_count(7)  # the default and six dtypes
    slider.focus()
    for _ in range(5):
        page.keyboard.press("ArrowRight")  # the keyboard moves the slider by its step, 0.01
    expect(editor.locator("output")).to_have_text("0.55")
    editor.get_by_label("dtype").select_option("bfloat16")
    editor.get_by_role("button", name="Apply").click()
    expect(editor).to_be_hidden()  # closed once the server answered
    expect(page.locator("#notice")).to_have_text("on-vllm: saved.")
    options = model_view(ui_server, "on-vllm")["entry"]["options"]
    assert options == {"max_model_len": 1024, "gpu_memory_utilization": 0.55, "dtype": "bfloat16"}

    page.get_by_role("button", name="Edit on-vllm").click()  # back to the server's default: the option leaves the entry
    expect(slider).to_have_value("0.55")
    editor.get_by_role("button", name="Use the default").click()
    expect(editor.locator("output")).to_have_text("0.90 (default)")  # JARVIS_VLLM_GPU_MEMORY_UTILIZATION
    editor.get_by_role("button", name="Apply").click()
    expect(editor).to_be_hidden()
    expect(page.locator("#notice")).to_have_text("on-vllm: saved.")
    assert model_view(ui_server, "on-vllm")["entry"]["options"] == {"max_model_len": 1024, "dtype": "bfloat16"}
    admin(ui_server, "DELETE", "/models/on-vllm")


# ---- the test box and the figures ---------------------------------------------------------------


def test_the_test_box_streams_an_answer_and_the_figures_follow(page: Page, ui_server: LiveServer) -> None:
    admin(ui_server, "POST", "/models/primary/load")
    signed_in(page, ui_server)
    box = page.locator("#test-form")
    key_field = box.get_by_label("API key")
    expect(key_field).to_be_visible()  # this server has JARVIS_API_KEY
    box.get_by_label("Model").select_option("primary")
    box.get_by_label("Answer up to (tokens)").fill("12")
    box.get_by_label("Message").fill("The capital of France is")
    box.get_by_role("button", name="Send").click()
    expect(page.locator("#test-stats")).to_contain_text("JARVIS_API_KEY")  # no key: /v1 refused it, and the box says which key

    key_field.fill(API_KEY)
    # Count the pieces of text the answer arrives in: streamed means more than one.
    page.evaluate(
        """() => {
            window.answerPieces = 0;
            new MutationObserver((changes) => { window.answerPieces += changes.length; })
                .observe(document.getElementById("test-output"), {childList: true, characterData: true, subtree: true});
        }"""
    )
    box.get_by_role("button", name="Send").click()
    stats = page.locator("#test-stats")
    expect(stats).to_contain_text("finish:", timeout=60_000)
    expect(stats).to_contain_text("time to first token")
    expect(stats).to_contain_text("tokens/s")
    assert page.locator("#test-output").inner_text().strip() != ""
    assert page.evaluate("window.answerPieces") > 2, "the answer arrived in one piece, not streamed"
    assert page.evaluate("sessionStorage.getItem('jarvis.apiKey')") == API_KEY

    for figure in ("requests_per_minute", "ttft_seconds", "tokens_per_second", "cache_hit_rate", "rss_bytes"):
        expect(page.locator(f'figure[data-figure="{figure}"] .figure-value')).not_to_have_text("–", timeout=15_000)
    expect(page.locator('figure[data-figure="rss_bytes"] .figure-value')).to_have_text(re.compile(r"^\d+ MiB$"))
    points = admin(ui_server, "GET", "/metrics")["points"]
    assert sum(point["generations"] for point in points) >= 1


# ---- keyboard, screens, addresses ---------------------------------------------------------------


def test_usable_with_the_keyboard_alone(page: Page, ui_server: LiveServer) -> None:
    page.goto(f"{ui_server.base_url}/ui")
    expect(page.get_by_label("Admin key")).to_be_focused()
    page.keyboard.type(ADMIN_KEY)
    page.keyboard.press("Enter")
    expect(page.locator("#console")).to_be_visible()
    edit = page.get_by_role("button", name="Edit primary")
    edit.focus()
    # After a refresh (the uptime in the header moves on), focus is where the operator left it.
    before = page.locator("#server-line").inner_text()
    expect(page.locator("#server-line")).not_to_have_text(before, timeout=10_000)
    expect(edit).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Edit primary")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.locator("#edit-section").get_by_label("context size")).to_be_focused()
    page.keyboard.press("Escape")
    expect(page.locator("#edit-section")).to_be_hidden()
    expect(edit).to_be_focused()


def test_desktop_and_phone_screenshots(browser, ui_server: LiveServer, tmp_path: Path) -> None:
    for name, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        page, problems = new_page(browser, viewport)
        signed_in(page, ui_server)
        expect(fact(page, "llama_cpp", "running")).to_have_text("yes")
        # Nothing wider than the screen: no sideways scrolling on a phone.
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        if name == "phone":  # the table becomes one labelled block per model
            assert page.locator("#models-body td").first.evaluate("cell => getComputedStyle(cell).display") == "grid"
        path = tmp_path / f"settings-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
        print(f"screenshot: {path}")
        page.context.close()
        assert problems == []


def lan_address() -> str | None:
    """This machine's address on its network (no packet is sent: a UDP socket only picks a route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_page_works_from_a_lan_address(page: Page, ui_server: LiveServer) -> None:
    address = lan_address()
    if address is None:
        pytest.skip("this machine has no network address besides loopback")
    port = ui_server.base_url.rsplit(":", 1)[1]
    base = f"http://{address}:{port}"
    headers = httpx.get(f"{base}/ui/", timeout=30).headers
    assert "default-src 'self'" in headers["content-security-policy"] and "unsafe-inline" not in headers["content-security-policy"]
    sign_in(page, base)
    expect(page.locator("#console")).to_be_visible()
    expect(fact(page, "llama_cpp", "model")).to_contain_text("primary")


# ---- the engine switch (vLLM tier; last: it takes minutes) --------------------------------------


@pytest.mark.vllm
def test_switch_to_vllm_from_the_page(page: Page, ui_server: LiveServer) -> None:
    admin(ui_server, "POST", "/models/primary/load")
    signed_in(page, ui_server)
    switch = card(page, "vllm").get_by_role("button", name="Switch to vLLM")
    switch.click()
    expect(switch).to_be_disabled()
    progress = card(page, "vllm").locator(".progress")
    expect(progress).to_be_visible()
    stages: list[str] = []
    deadline = time.monotonic() + ENGINE_SWITCH_TIMEOUT_MS / 1000
    badge = card(page, "vllm").locator(".badge")
    while badge.inner_text() != "active" and time.monotonic() < deadline:
        if progress.is_visible():
            stage = re.sub(r" \([^)]*\)$", "", progress.inner_text())  # without the elapsed time
            if not stages or stages[-1] != stage:
                stages.append(stage)
        page.wait_for_timeout(500)
    expect(badge).to_have_text("active")
    assert len(stages) >= 2, f"the page showed no progress through the stages: {stages}"
    assert any("vLLM" in stage for stage in stages), stages
    expect(fact(page, "vllm", "model")).to_have_text("primary (loaded)")
    expect(card(page, "llama_cpp").get_by_role("button", name="Switch to llama.cpp")).to_be_enabled()
    assert admin(ui_server, "GET", "/status")["engine"] == "vllm"
    assert "switch engine of primary" in audit_actions(ui_server)
    print(f"stages shown: {stages}")

    box = page.locator("#test-form")
    box.get_by_label("API key").fill(API_KEY)
    box.get_by_label("Answer up to (tokens)").fill("6")
    box.get_by_label("Message").fill("Hello")
    box.get_by_role("button", name="Send").click()
    expect(page.locator("#test-stats")).to_contain_text("finish:", timeout=120_000)

    card(page, "llama_cpp").get_by_role("button", name="Switch to llama.cpp").click()
    expect(card(page, "llama_cpp").locator(".badge")).to_have_text("active", timeout=ENGINE_SWITCH_TIMEOUT_MS)
    assert admin(ui_server, "GET", "/status")["engine"] == "llama_cpp"
