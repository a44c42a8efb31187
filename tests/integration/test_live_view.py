"""`framesink live` in a real headless browser (Debian's Chromium, driven by chromedriver through
Selenium): the page shows every participant's newest frame of each type with their names and
the slides found, frames stored by two receivers at once (two container tasks), and updates as
new frames are stored, pushed (Server-Sent Events), never polled. The page refuses requests
without its token or naming another host, and serves only its recording's frames."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from framesink.local import LocalConfig, background_stack
from framesink.synthetic import frame_message, make_png, make_slide

pytestmark = pytest.mark.slow

GUARD = 120
ROOT = Path(__file__).resolve().parents[2]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("Chromium and chromedriver are missing: `make test` installs them (apt-get install chromium "
                    "chromium-driver); on another machine install them the same way")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def two_receivers(tmp_path):
    """The local stack with its receiver and a second one on the same AWS (two tasks)."""
    from framesink_receiver import Receiver, ReceiverConfig, receiver_service

    config = LocalConfig.isolated("live", ingress="direct", state_file=tmp_path / "local.json")
    with background_stack(config, timeout=GUARD) as stack:
        second = Receiver(receiver_service(), ReceiverConfig(port=0))
        stack.run(second.start())
        try:
            yield stack, [stack.state["ws_url"], f"{second.url}?token={stack.token}"]
        finally:
            stack.run(second.stop())


def send(stack, url: str, messages: list[str], pause: float = 0.05) -> None:
    async def go():
        async with connect(url, max_size=None, compression=None) as ws:
            for message in messages:
                await ws.send(message)
                await asyncio.sleep(pause)
    stack.run(go(), GUARD)


def wait_for(driver, script: str, what: str, timeout: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(lambda d: d.execute_script(script))
    except Exception:  # noqa: BLE001 - say what the page showed instead
        raise AssertionError(f"the page never showed {what}: {driver.find_element('tag name', 'body').text[:800]}")


TILE = """const t = document.getElementById(arguments[0] || 'x');
  return t && t.querySelector('img').complete && t.querySelector('img').naturalWidth > 0 ? t.innerText : null;"""


def test_the_live_page_shows_every_participant_from_two_receivers_and_updates_by_push(browser, two_receivers):
    stack, (first, second) = two_receivers
    rec = f"live-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "lambdas")])}
    proc = subprocess.Popen([sys.executable, "-m", "framesink", "live", "--recording", rec, "--local",
                             "--state-file", str(stack.config.state_file), "--seconds", "90"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "live view of recording" in line, line + proc.stderr.read()
        url = line.rsplit(" ", 1)[1].strip()
        base, token = url.split("/?t=")
        # what the page refuses: no token, a rebinding host name, another recording's frame
        for path, headers, status in (("/", {}, 403), (f"/?t={token}", {"Host": "attacker.example:80"}, 421),
                                      (f"/frame/recordings/other/participants/1/webcam/0000000000.png?t={token}", {},
                                       404), (f"/frame/../../etc/passwd?t={token}", {}, 404)):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(base + path, headers=headers), timeout=10)
            assert refused.value.code == status, path

        browser.get(url)
        wait_for(browser, "return document.getElementById('status').textContent.startsWith('live')", "live status")
        ada = [frame_message(make_png(160, 120, seed=k, detailed=False), recording_id=rec, participant_id=100,
                             relative=k / 2, name="Ada Lovelace") for k in range(3)]
        deck = [frame_message(make_slide(k // 2, 640, 360, noise_seed=k), recording_id=rec, participant_id=100,
                              relative=k / 2, frame_type="screenshare", name="Ada Lovelace")
                for k in range(4)]
        grace = [frame_message(make_png(160, 120, seed=50 + k, detailed=False), recording_id=rec, participant_id=200,
                               relative=k / 2, name="Grace Hopper") for k in range(3)]
        send(stack, first, ada)  # one task
        send(stack, first, deck, pause=0.5)  # a shared screen at 2 fps
        send(stack, second, grace)  # the other
        shown = {(p, t): wait_for(browser, TILE.replace("arguments[0]", f"'tile-{p}-{t}'"), f"{p}'s {t}")
                 for p, t in (("100", "webcam"), ("100", "screenshare"), ("200", "webcam"))}
        assert "Ada Lovelace (webcam)" in shown[("100", "webcam")] and "Grace Hopper" in shown[("200", "webcam")]
        wait_for(browser, "return document.querySelector('#tile-200-webcam .time').textContent === '1.0 s'",
                 "Grace's newest frame")
        # (waited for too: the time's text changes before the newer frame's image has loaded)
        assert "lag" in wait_for(browser, TILE.replace("arguments[0]", "'tile-200-webcam'"), "Grace's loaded tile")
        # the two slides of the deck, found by the novelty function and pushed
        wait_for(browser, "return document.getElementById('slide-count').textContent === '2'", "2 slides")
        # a frame stored later updates the tile in place: pushed, no reload
        browser.execute_script("window.__same_page = true")
        send(stack, second, [frame_message(make_png(160, 120, seed=99, detailed=False), recording_id=rec,
                                           participant_id=200, relative=7.5, name="Grace Hopper")])
        wait_for(browser, "return document.querySelector('#tile-200-webcam .time').textContent === '7.5 s'",
                 "the frame stored after the page opened")
        assert browser.execute_script("return window.__same_page === true")
        assert browser.execute_script("return document.querySelectorAll('.tile').length") == 3
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=GUARD)
    assert proc.returncode == 0, err
    # its subscription went with it
    rules = stack.client("events").list_rules(EventBusName=stack.state["event_bus"])["Rules"]
    assert not [r for r in rules if "-analyze-live-" in r["Name"]]
