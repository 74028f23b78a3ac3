"""`vidiff serve` in a real browser: headless Chromium (the Debian packages chromium and chromium-driver, which
.ci/run installs) types a prompt into the page, clicks Generate, and checks the clip the <video> element plays, the
error the page shows for an empty prompt and for a full queue, the gallery, and that the page reaches nothing but
the server.

VIDIFF_SCREENSHOT=docs/serve.png keeps the screenshot taken after the first clip (README's picture).
"""

import os
import shutil
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from gradio_client import Client  # noqa: E402
from gradio_client.utils import Status  # noqa: E402

from vidiff.io.video import read_video  # noqa: E402
from vidiff.testing.server import serve  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
# skipped without a browser on a developer's machine only: .ci/run installs one and sets VIDIFF_REQUIRE_BROWSER
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER) and not os.environ.get("VIDIFF_REQUIRE_BROWSER"),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                "chromium-driver); .ci/run installs them")


@pytest.fixture
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--window-size=1280,1200", f"--user-data-dir={tmp_path / 'chromium'}",
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):  # the page may reach nothing else
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: use the given driver, download nothing
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


def find(driver, selector: str, timeout: float = 60):
    """The element at `selector` once it can be clicked (the page renders as its scripts arrive)."""
    clickable = expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, selector))
    return WebDriverWait(driver, timeout, ignored_exceptions=RERENDERED).until(clickable)


# Gradio re-renders components while a wait reads them; an element found a moment ago can be gone when read
RERENDERED = (StaleElementReferenceException,)


def set_value(driver, selector: str, value: str) -> None:
    """Type into a text field or a slider's number box, and leave it (Gradio takes the value on change)."""
    field = find(driver, selector)
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.DELETE)
    if value:
        field.send_keys(value)
    field.send_keys(Keys.TAB)


def choose(driver, elem_id: str, label: str) -> None:
    """Pick an option of a Gradio dropdown by its label."""
    find(driver, f"#{elem_id} input").click()
    find(driver, f"#{elem_id} li[aria-label='{label}']").click()
    WebDriverWait(driver, 60).until(lambda d: d.find_element(By.CSS_SELECTOR, f"#{elem_id} input")
                                    .get_attribute("value") == label)


def generate_and_wait_for_a_new_clip(driver, previous: str | None, timeout: float = 240) -> str:
    find(driver, "#generate").click()
    return WebDriverWait(driver, timeout, ignored_exceptions=RERENDERED).until(
        lambda d: next((src for video in d.find_elements(By.CSS_SELECTOR, "#clip video")
                        if (src := video.get_attribute("src")) and src != previous), False))


def frames_at(src: str, folder: Path):
    path = folder / Path(src.split("?")[0]).name
    with urllib.request.urlopen(src, timeout=60) as response:
        path.write_bytes(response.read())
    return read_video(path)[0]


def test_the_page_generates_a_clip_shows_errors_and_keeps_serving(browser, tmp_path):
    with serve("--max-queue", "1", "--output-dir", str(tmp_path / "clips"), "--threads", os.environ.get("VIDIFF_TEST_THREADS", "1"),
               cwd=tmp_path) as server:
        try:
            use_the_page(browser, server, tmp_path)
        except (AssertionError, WebDriverException) as error:
            page = browser.find_element(By.TAG_NAME, "body").text
            pytest.fail(f"{type(error).__name__}: {error}\n--- the page:\n{page}\n--- the server's log (end):\n"
                        f"{server.log_text()[-3000:]}")


def use_the_page(browser, server, tmp_path: Path) -> None:
    browser.get(server.url)
    wait = WebDriverWait(browser, 120, ignored_exceptions=RERENDERED)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#prompt textarea"))

    # 1. Small settings, a prompt, Generate: the <video> plays the clip, 4 frames of 64x64
    set_value(browser, "#frames input[type=number]", "4")
    set_value(browser, "#steps input[type=number]", "10")  # enough for a clean clip in the screenshot
    choose(browser, "interpolate", "off")
    choose(browser, "upscale", "off")
    set_value(browser, "#seed input, #seed textarea", "3")
    set_value(browser, "#prompt textarea", "a red circle moving right")
    first = generate_and_wait_for_a_new_clip(browser, None)
    assert first.startswith(server.url)
    assert frames_at(first, tmp_path).shape == (4, 64, 64, 3)
    wait.until(lambda d: "Seed 3" in d.find_element(By.CSS_SELECTOR, "#summary").text)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#gallery img"))
    browser.execute_script("const v = document.querySelector('#clip video'); v.pause(); v.currentTime = 0;")
    wait.until(lambda d: d.execute_script("const v = document.querySelector('#clip video'); "
                                          "return v.paused && v.currentTime === 0 && !v.seeking;"))
    screenshot = Path(os.environ.get("VIDIFF_SCREENSHOT") or tmp_path / "serve.png")  # the first frame, paused
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(screenshot))

    # 2. An empty prompt: an error in the page, and the server goes on serving
    set_value(browser, "#prompt textarea", "")
    find(browser, "#generate").click()
    try:
        wait.until(lambda d: d.find_elements(By.XPATH, "//*[contains(text(), 'the prompt is empty')]"))
    except TimeoutException:
        raise AssertionError("no error in the page for an empty prompt") from None
    set_value(browser, "#prompt textarea", "a blue square moving left")
    set_value(browser, "#seed input, #seed textarea", "")
    second = generate_and_wait_for_a_new_clip(browser, first)
    assert frames_at(second, tmp_path).shape == (4, 64, 64, 3)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery img")) == 2)

    # 3. Clicking the first result in the gallery (the newest is first) restores its settings
    browser.find_elements(By.CSS_SELECTOR, "#gallery img")[1].click()
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#prompt textarea").get_attribute("value")
               == "a red circle moving right")
    assert browser.find_element(By.CSS_SELECTOR, "#seed input, #seed textarea").get_attribute("value") == "3"
    assert browser.find_element(By.CSS_SELECTOR, "#steps input[type=number]").get_attribute("value") == "10"

    # 4. A full queue says so in the page: one call holds the model and one waits (--max-queue 1)
    client = Client(server.url, verbose=False)
    holding = client.submit("a red circle moving right", num_frames=16, steps=25, interpolate=1, upscale=1,
                            api_name="/generate")
    wait.until(lambda d: holding.status().code in (Status.PROCESSING, Status.PROGRESS))
    waiting = client.submit("a blue square moving left", num_frames=4, steps=2, interpolate=1, upscale=1,
                            api_name="/generate")
    wait.until(lambda d: waiting.status().code == Status.IN_QUEUE)
    find(browser, "#generate").click()
    wait.until(lambda d: d.find_elements(By.XPATH, "//*[contains(text(), 'currently busy')]"))
    assert not holding.done()
    assert all(len(job.result(timeout=240)) == 4 for job in (holding, waiting))

    # 5. Everything the page loaded came from the server
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(server.url) for url in loaded), loaded
