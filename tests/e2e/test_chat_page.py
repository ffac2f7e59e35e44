"""The chat page in a real browser (Debian's chromium, driven by playwright) against a real `serve --http-port`:
a streamed answer, a reload mid-stream that goes on without loss or duplication, Stop, an approval, a second tab.

`PAGE_SCREENSHOTS=docs/images pytest tests/e2e/test_chat_page.py` saves the README's screenshots there.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from pydantic_ai_stream import SessionKeys

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

from page_agents import THOUGHT, answer, deployed  # noqa: E402
from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright  # noqa: E402
from test_grpc_process import _process  # noqa: E402

TOKEN = "page-token"
WAIT_MS = 60_000  # a loaded 2-core machine


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
def base_url(redis_url: str, prefix: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`serve --http-port 0` hosting the page's agents; its HTTP base URL. Its log goes on to `serve.log` (read
    from its pipe: a pipe nobody reads fills up, and the server blocks on its next log line)."""
    command = [sys.executable, "-m", "pydantic_ai_stream", "serve", "--port", "0", "--http-port", "0"]
    command += ["--agent", "slow=page_agents:slow", "--agent", "deployer=page_agents:deployer"]
    command += ["--agent", "oncall=grpc_agents:oncall", "--agent", "seeing=grpc_agents:seeing_any"]
    command += ["--token", f"{TOKEN}=1:1"]
    env = {"REDIS_URL": redis_url, "PYDANTIC_AI_STREAM_REDIS_PREFIX": prefix}
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with _process(command, env, r"serving HTTP on (\S+) ") as (proc, match), log.open("w") as out:
        assert proc.stderr is not None
        drain = threading.Thread(target=shutil.copyfileobj, args=(proc.stderr, out), daemon=True)
        drain.start()
        yield match.group(1)
        proc.terminate()  # its log to the end, before its pipe is closed
        drain.join(30)
    errors = [line for line in log.read_text().splitlines() if "ERROR" in line or "Traceback" in line]
    assert not errors, f"what the page did (reloads, closed tabs, Stop) made the server log errors: see {log}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    """A tab of a fresh browser profile that has the token (as if typed in once)."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1000, "height": 640})
    context.set_default_timeout(WAIT_MS)
    context.add_init_script(f"localStorage.setItem('pydantic-ai-stream.token', {TOKEN!r})")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"the page threw: {errors}"


def _session() -> str:
    return f"p{uuid.uuid4().hex[:12]}"


def _open(page: Page, agent: str, session: str) -> None:
    page.goto(f"/chat/#agent={agent}&session={session}")
    expect(page.locator("body")).to_have_attribute("data-phase", "idle")


def _send(page: Page, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.press("#prompt", "Enter")


def _answer(page: Page) -> str:
    return page.locator(".message.assistant .text").last.text_content() or ""


def _until_text(page: Page, words: str) -> None:
    """Wait until the streamed answer has `words`."""
    expect(page.locator(".message.assistant .text").last).to_contain_text(words)


def _idle(page: Page) -> None:
    expect(page.locator("body")).to_have_attribute("data-phase", re.compile("idle|waiting"), timeout=WAIT_MS)


def _screenshot(page: Page, name: str) -> None:
    if folder := os.environ.get("PAGE_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"chat-{name}.png"))


def test_a_prompt_streams_its_answer_and_the_history_shows_it_again(page: Page) -> None:
    session = _session()
    _open(page, "slow", session)
    _send(page, "stream me some words")
    expect(page.locator(".message.user")).to_have_text(re.compile("stream me some words"))
    _until_text(page, "w3 ")
    _screenshot(page, "streaming")
    _idle(page)
    assert _answer(page) == answer()
    page.locator(".thinking summary").click()
    expect(page.locator(".thinking .reasoning-text")).to_have_text(THOUGHT)
    page.reload()  # the run ended: its conversation comes from the store
    _idle(page)
    assert _answer(page) == answer()
    assert page.locator(".message.user").count() == 1
    assert page.locator(".message.assistant").count() == 1
    expect(page.locator("#session-list a[aria-current=page]")).to_contain_text("stream me some words")
    _send(page, "and again")  # a second turn, after the stored history
    expect(page.locator(".message")).to_have_count(4)
    _idle(page)
    assert page.locator(".message.assistant .text").all_text_contents() == [answer(), answer()]


def test_without_a_token_the_page_asks_for_one_and_keeps_it(browser: Browser, base_url: str) -> None:
    context = browser.new_context(base_url=base_url)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.goto("/")
    expect(page.locator("#status")).to_have_text("Enter a token to continue.")
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#agent option")).to_have_text(["demo", "deployer", "oncall", "seeing", "slow"])
    expect(page).to_have_url(re.compile(r"/chat/#agent=demo&session=\w+"))
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-phase", "idle")
    expect(page.locator("#status")).to_have_text("")
    context.close()


def test_a_reload_mid_stream_goes_on_after_the_last_chunk_it_rendered(page: Page) -> None:
    resumed: list[Request] = []
    page.on("request", lambda r: resumed.append(r) if r.url.endswith("/stream") else None)
    _open(page, "slow", _session())
    _send(page, "go")
    _until_text(page, "w5 ")
    page.evaluate("() => new Promise(requestAnimationFrame)")  # what it saved is what it shows
    shown, cursor = _answer(page), page.locator("body").get_attribute("data-cursor")
    assert cursor
    page.reload()
    _until_text(page, shown)  # at once, from the tab's own copy
    _idle(page)
    assert _answer(page) == answer(), "no word lost or repeated"
    assert page.locator(".message.assistant").count() == 1
    assert page.locator(".message.user").count() == 1, "the prompt once, whether from the tab's copy or the history"
    [request] = resumed
    assert _position(request.headers["last-event-id"]) >= _position(cursor), "it went on after what it had"


def test_a_stream_cut_short_is_resumed_after_its_last_chunk(page: Page) -> None:
    """The chat response ends halfway (as a dropped connection does): the page asks for the rest after the last
    cursor it got, and the answer is whole, nothing repeated."""
    cut_after: list[str] = []

    def cut(route: Route) -> None:
        response = route.fetch()  # the whole run's stream
        events = response.text().split("\n\n")
        kept = events[: len(events) // 2]
        cut_after.append(re.findall(r"^id: (\S+)$", "\n".join(kept), re.MULTILINE)[-1])
        route.fulfill(response=response, body="\n\n".join(kept) + "\n\n")

    page.route("**/vercel-ai/chat", cut)
    resumed: list[Request] = []
    page.on("request", lambda r: resumed.append(r) if r.url.endswith("/stream") else None)
    _open(page, "slow", _session())
    _send(page, "go")
    _idle(page)
    assert _answer(page) == answer()
    [request] = resumed
    assert request.headers["last-event-id"] == cut_after[0]


def test_a_kept_cursor_the_stream_does_not_have_is_dropped_and_the_run_shown_from_its_start(page: Page) -> None:
    """A tab's saved copy whose cursor the stream does not have (416; a trimmed one is 410) is not trusted."""
    session = _session()
    _open(page, "slow", session)
    _send(page, "go")
    _until_text(page, "w1 ")
    bogus = {"type": "text", "text": "not from this run", "state": "streaming"}
    kept = {"cursor": "9999999999999-0", "message": {"id": "", "role": "assistant", "parts": [bogus]}, "user": None}
    tab = page.context.new_page()  # a tab of its own, whose sessionStorage says it rendered past the stream's end
    tab.add_init_script(f"sessionStorage.setItem('pydantic-ai-stream.live.slow/{session}', {json.dumps(kept)!r})")
    tab.goto(f"/chat/#agent=slow&session={session}")
    _idle(tab)
    assert _answer(tab) == answer()
    expect(tab.locator(".message.assistant")).to_have_count(1)


def _position(cursor: str) -> tuple[int, int, float]:
    """A cursor's place in the stream: `<ms>-<seq>` (after all its chunks) or `<ms>-<seq>/<k>` (its k-th chunk)."""
    entry, _, chunk = cursor.partition("/")
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq), float(chunk) if chunk else float("inf")


def test_stop_cancels_the_run_its_stream_ends_canceled_and_its_partial_answer_is_kept(
    page: Page, redis_url: str, prefix: str
) -> None:
    session = _session()
    _open(page, "slow", session)
    _send(page, "go")
    _until_text(page, "w2 ")
    page.get_by_role("button", name="Stop").click()
    _idle(page)
    expect(page.locator("#status")).to_have_text("Stopped.")
    assert answer().startswith(_answer(page))
    assert _answer(page) != answer()
    keys = SessionKeys.build(prefix=prefix, scope_id=1, user_id=1, session_id=session)
    with Redis.from_url(redis_url) as redis:
        last = redis.xrevrange(keys.stream, count=2)
    [(_, end), (_, error)] = last
    assert end[b"type"] == b"end"
    assert error[b"type"] == b"error"
    assert b"canceled" in error[b"body"]
    stopped = _answer(page)
    page.reload()  # the partial conversation was kept
    _idle(page)
    expect(page.locator(".message.assistant .text")).to_have_text(stopped)


def test_an_approved_tool_runs_and_the_agent_goes_on(page: Page) -> None:
    _open(page, "deployer", _session())
    _send(page, "deploy it")
    tool = page.locator(".tool[data-tool=deploy]")
    expect(tool).to_have_attribute("data-state", "approval-requested")
    expect(tool.locator("pre").first).to_contain_text('"env": "production"')
    expect(page.locator("body")).to_have_attribute("data-phase", "waiting")
    _screenshot(page, "approval")
    tool.get_by_role("button", name="Approve").click()
    expect(tool).to_have_attribute("data-state", "output-available")
    _idle(page)
    expect(page.locator(".message.assistant .text").last).to_have_text(deployed())


def test_stop_ends_a_run_that_waits_for_an_approval(page: Page, redis_url: str, prefix: str) -> None:
    session = _session()
    _open(page, "deployer", session)
    _send(page, "deploy it")
    tool = page.locator(".tool[data-tool=deploy]")
    expect(tool).to_have_attribute("data-state", "approval-requested")
    expect(page.locator("body")).to_have_attribute("data-phase", "waiting")
    page.get_by_role("button", name="Stop").click()
    _idle(page)
    expect(page.locator("#status")).to_have_text("Stopped.")
    keys = SessionKeys.build(prefix=prefix, scope_id=1, user_id=1, session_id=session)
    with Redis.from_url(redis_url) as redis:
        [(_, end), (_, error)] = redis.xrevrange(keys.stream, count=2)
    assert (end[b"type"], error[b"type"]) == (b"end", b"error")
    assert b"canceled" in error[b"body"]


def test_the_demo_agent_thinks_calls_its_tool_and_answers(page: Page) -> None:
    """The server's built-in agent, as the README's first command serves it."""
    _open(page, "demo", _session())
    _send(page, "count the words in this sentence")
    _idle(page)
    tool = page.locator(".tool[data-tool=count_words]")
    expect(tool).to_have_attribute("data-state", "output-available")
    expect(tool.locator("pre")).to_have_text(['{\n  "text": "count the words in this sentence"\n}', "6"])
    expect(page.locator(".message.assistant .text")).to_contain_text("You said 6 words")
    page.locator(".thinking summary").click()
    expect(page.locator(".thinking .reasoning-text")).not_to_be_empty()
    _screenshot(page, "tool-call")


def test_a_waiting_run_shows_once_after_a_reload_and_an_answer_from_another_tab_goes_on_in_both(page: Page) -> None:
    session = _session()
    _open(page, "deployer", session)
    _send(page, "deploy it")
    expect(page.locator("body")).to_have_attribute("data-phase", "waiting")
    second = page.context.new_page()
    second.goto(f"/chat/#agent=deployer&session={session}")
    page.reload()
    for tab in (page, second):
        expect(tab.locator("body")).to_have_attribute("data-phase", "waiting")
        expect(tab.locator(".message")).to_have_count(2)  # the prompt and the calls, each once
        expect(tab.locator(".tool[data-tool=deploy]")).to_have_attribute("data-state", "approval-requested")
    second.locator(".tool[data-tool=deploy]").get_by_role("button", name="Approve").click()
    expect(page.locator(".message.assistant .text")).to_contain_text("production. d0 d1")
    third = page.context.new_page()  # opened while the answered run goes on
    third.goto(f"/chat/#agent=deployer&session={session}")
    for tab in (second, page, third):
        _idle(tab)
        expect(tab.locator(".message")).to_have_count(2)  # its continuation is in the message it answered
        expect(tab.locator(".message.assistant .text")).to_have_text(deployed())
        expect(tab.locator(".tool[data-tool=deploy]")).to_have_attribute("data-state", "output-available")


def test_a_reload_mid_continuation_goes_on_in_the_answered_message(page: Page) -> None:
    resumed: list[Request] = []
    page.on("request", lambda r: resumed.append(r) if r.url.endswith("/stream") else None)
    _open(page, "deployer", _session())
    _send(page, "deploy it")
    page.locator(".tool[data-tool=deploy]").get_by_role("button", name="Approve").click()
    _until_text(page, "production. d0 d1")
    shown = page.locator("body").get_attribute("data-cursor")
    assert shown
    resumed.clear()  # (the page followed the waiting run too: another tab could have answered)
    page.reload()
    _idle(page)
    expect(page.locator(".message")).to_have_count(2)
    expect(page.locator(".message.assistant .text")).to_have_text(deployed())
    [request] = resumed
    assert _position(request.headers["last-event-id"]) >= _position(shown), "it went on after what it had"


def test_the_result_of_a_tool_run_elsewhere_is_typed_in_and_the_agent_goes_on(page: Page) -> None:
    _open(page, "oncall", _session())
    _send(page, "page someone")
    tool = page.locator(".tool[data-tool=page]")
    expect(page.locator("body")).to_have_attribute("data-phase", "waiting")
    tool.get_by_label("Result of page").fill('"bob is on it"')
    tool.get_by_role("button", name="Send result").click()
    expect(tool).to_have_attribute("data-state", "output-available")
    _idle(page)
    expect(page.locator(".message.assistant .text").last).to_have_text("paged: page=bob is on it")


def test_attached_files_go_to_the_model_with_the_prompt(page: Page) -> None:
    _open(page, "seeing", _session())
    page.get_by_label("Attach files").set_input_files(
        files=[{"name": "note.txt", "mimeType": "text/plain", "buffer": b"hello"}]
    )
    _send(page, "read this")
    expect(page.locator(".message.user .link")).to_have_text("note.txt")
    _idle(page)
    said = _answer(page)
    assert "text=read this\n" in said
    assert "binary=text/plain:5:" in said
    assert page.get_by_label("Attach files").input_value() == ""  # sent once, with that message


def test_a_second_tab_follows_the_same_run(page: Page) -> None:
    session = _session()
    _open(page, "slow", session)
    _send(page, "go")
    _until_text(page, "w3 ")
    second = page.context.new_page()
    second.goto(f"/chat/#agent=slow&session={session}")
    expect(second.locator(".message.assistant .text").last).to_contain_text("w3 ")
    expect(second.locator(".message.user")).to_have_text(re.compile("go"))  # the live run's prompt, from the history
    _idle(page)
    _idle(second)
    assert _answer(second) == _answer(page) == answer()
    assert page.locator(".message.user").count() == second.locator(".message.user").count() == 1


NODE_WEB = Path(__file__).parent.parent / "node_web"


@pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_WEB / "node_modules" / "ai").is_dir(),
    reason="needs node and `npm ci --prefix tests/node_web` (.ci/run does both)",
)
def test_the_page_builds_the_messages_the_ai_sdk_builds_from_the_same_chunks(base_url: str) -> None:
    """The page's `applyChunk` against the `ai` package's `readUIMessageStream` on the server's own streams: the
    demo's thinking, tool call and answer, a streamed answer, and a waiting run answered and continued."""
    node = subprocess.run(
        ["node", str(NODE_WEB / "page_model.mjs"), base_url, TOKEN], capture_output=True, text=True, timeout=120
    )
    assert node.returncode == 0, node.stderr
    seen = json.loads(node.stdout)
    assert set(seen) == {"demo", "slow", "waiting", "continued"}
    for name, built in seen.items():
        assert built["page"] == built["sdk"], name
    assert [p["type"] for p in seen["continued"]["page"]["parts"]] == [
        "step-start", "reasoning", "tool-deploy", "step-start", "text"
    ]  # fmt: skip
