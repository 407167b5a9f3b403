"""Real tier: upstreams failing under a remote model. Two instances of this server on the packaged
model serve the alias `pair` (fallback: the local model; prompts tokenized here from the GGUF file);
`slow` has one of them only, a 2 s timeout and no fallback. One upstream is killed while streams run on both; one is frozen
(SIGSTOP: it accepts connections and answers nothing); then both are killed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from tests.conftest import ADMIN_KEY, LiveServer, start_live_server, stop_live_server
from tests.upstream_servers import freeze, kill, packaged_model, port_of, start_upstream, thaw

pytestmark = pytest.mark.real

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
STORY = [{"role": "user", "content": "Write a long story about a lighthouse keeper and the storms of a whole winter."}]


@dataclass
class Rig:
    proxy: LiveServer
    upstreams: list[LiveServer]
    folder: object


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    folder = tmp_path_factory.mktemp("failover")
    upstreams = [start_upstream(folder), start_upstream(folder)]
    pair = ", ".join(f"{{base_url: '{server.api_url}'}}" for server in upstreams)
    models = folder / "models.yaml"
    models.write_text(
        "models:\n"
        "  - {alias: local, engine: llama_cpp, context_size: 1024, options: {parallel: 2, n_threads: 1}}\n"
        f"  - {{alias: pair, engine: openai, model: jarvis, fallback: local,\n"
        f"     options: {{health_interval: 0.5, tokenizer: '{packaged_model()}', upstreams: [{pair}]}}}}\n"
        f"  - {{alias: slow, engine: openai, model: jarvis, options: {{base_url: '{upstreams[0].api_url}', timeout: 2, health_interval: 0.5}}}}\n"
    )
    proxy = start_live_server(folder, JARVIS_MODELS_FILE=str(models), JARVIS_ADMIN_KEY=ADMIN_KEY)
    state = Rig(proxy, upstreams, folder)
    yield state
    for server in [state.proxy, *state.upstreams]:
        stop_live_server(server)


@pytest.fixture(scope="module")
def client(rig: Rig) -> openai.OpenAI:
    return openai.OpenAI(base_url=rig.proxy.api_url, api_key="anything", max_retries=0, timeout=120)


def upstream_status(rig: Rig, alias: str = "pair") -> list[dict]:
    status = httpx.get(f"{rig.proxy.base_url}/admin/status", headers=ADMIN, timeout=30).json()
    return next(model for model in status["models"] if model["alias"] == alias)["engine_stats"]["upstreams"]


def wait_until(condition, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_killing_an_upstream_cuts_only_its_streams_and_it_comes_back(rig: Rig, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="pair", messages=STORY, max_tokens=2)  # loads the remote model
    assert "model jarvis: prompts are tokenized here" in rig.proxy.log_path.read_text()
    outcomes: dict[int, str] = {}
    started = [threading.Event() for _ in range(4)]

    def stream(index: int) -> None:
        try:
            for chunk in client.chat.completions.create(model="pair", messages=STORY, max_tokens=400, stream=True):
                if chunk.choices and chunk.choices[0].delta.content:
                    started[index].set()
            outcomes[index] = "completed"
        except openai.APIError as error:
            outcomes[index] = f"error: {error.message}"
        finally:
            started[index].set()

    threads = [threading.Thread(target=stream, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    assert all(event.wait(60) for event in started)
    victim = rig.upstreams[0]
    running_on_victim = next(upstream["in_flight"] for upstream in upstream_status(rig) if upstream["base_url"] == victim.api_url)
    assert running_on_victim >= 1  # least busy: the four streams went to both upstreams
    kill(victim)
    # Requests that start now never fail: the dead upstream is tried, taken out, the other one serves.
    for _ in range(4):
        answer = client.chat.completions.create(model="pair", messages=STORY, max_tokens=4)
        assert answer.model == "pair" and answer.choices[0].message.content is not None
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive(), "a stream hangs"
    cut = [outcome for outcome in outcomes.values() if outcome.startswith("error")]
    assert 1 <= len(cut) <= running_on_victim, outcomes
    assert all("the answer was cut" in outcome for outcome in cut), cut
    assert len(outcomes) == 4
    states = {upstream["base_url"]: upstream["healthy"] for upstream in upstream_status(rig)}
    assert states == {victim.api_url: False, rig.upstreams[1].api_url: True}
    rig.upstreams[0] = start_upstream(rig.folder, port=port_of(victim))  # type: ignore[arg-type]
    wait_until(lambda: all(upstream["healthy"] for upstream in upstream_status(rig)))
    answer = client.chat.completions.create(model="pair", messages=STORY, max_tokens=4)
    assert answer.model == "pair"


def test_a_frozen_upstream_is_a_504_naming_the_timeout(rig: Rig, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="slow", messages=STORY, max_tokens=2)  # loads it
    frozen = freeze(rig.upstreams[0])
    try:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as raised:
            client.chat.completions.create(model="slow", messages=STORY, max_tokens=4)
        assert time.monotonic() - started < 30
        assert raised.value.status_code == 504
        body = raised.value.body
        assert body["code"] == "upstream_timeout" and "sent nothing for 2 s" in body["message"]
    finally:
        thaw(frozen)
    wait_until(lambda: all(upstream["healthy"] for upstream in upstream_status(rig, "slow")))
    assert client.chat.completions.create(model="slow", messages=STORY, max_tokens=2).model == "slow"


def test_with_every_upstream_down_the_fallback_answers(rig: Rig, client: openai.OpenAI) -> None:
    for server in rig.upstreams:
        kill(server)
    answer = client.chat.completions.create(model="pair", messages=STORY, max_tokens=4)
    assert answer.model == "local" and answer.choices[0].message.content is not None
    stream = client.chat.completions.create(model="pair", messages=STORY, max_tokens=4, stream=True)
    assert {chunk.model for chunk in stream} == {"local"}
    status = httpx.get(f"{rig.proxy.base_url}/admin/status", headers=ADMIN, timeout=30).json()
    pair = next(model for model in status["models"] if model["alias"] == "pair")
    assert pair["last_fallback"]["to"] == "local" and pair["last_fallback"]["count"] >= 2
    assert all(upstream["name"] in pair["last_fallback"]["reason"] for upstream in pair["engine_stats"]["upstreams"])
    log = rig.proxy.log_path.read_text()
    assert "model pair cannot serve" in log and "the fallback local serves instead" in log
