"""`zoetrope serve` end to end in a real headless Chromium (tests/browser.py): type a prompt with
the suggested words, generate, watch the clip play, read the verdict, and send a size the model
cannot make. Skips, with the reason, only where no browser can run."""

import sys
import threading
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import browser  # noqa: E402
from test_pipeline import tiny_pipeline  # noqa: E402

from zoetrope.data.video import read_video  # noqa: E402
from zoetrope.serve import Studio, StudioServer  # noqa: E402

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(browser.missing() is not None, reason=str(browser.missing()))]

# The clip the page shows: its frame count, whether it is playing and how long it lasts.
PLAYING = """const v = document.getElementById('result-video');
return v.dataset.frames && v.readyState >= 2 && v.currentTime > 0 && !v.paused
    ? [Number(v.dataset.frames), v.duration, v.currentSrc] : null;"""


@pytest.fixture
def page(tmp_path):
    """The studio on a tiny random pipeline, and a browser on its page."""
    studio = Studio(tiny_pipeline(), tmp_path / "out")
    server = StudioServer(studio, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    driver = browser.chromium()
    driver.get(server.url)
    yield driver, server
    driver.quit()
    server.shutdown()
    server.server_close()
    studio.close(timeout=10)


def test_type_generate_play_and_critique(page, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver, server = page
    until = WebDriverWait(driver, 60).until
    until(lambda d: "words known" in d.find_element(By.ID, "model-line").text)
    assert driver.find_element(By.ID, "num_frames").get_attribute("value") == "9"
    prompt = driver.find_element(By.ID, "prompt")
    prompt.send_keys("a gr")  # the model's words that start with what is typed, in its order
    assert [c.text for c in until(lambda d: d.find_elements(By.CSS_SELECTOR, "#suggest .chip"))
            ] == ["green", "gray", "grey", "grows"]
    prompt.clear()
    prompt.send_keys("a red cir")
    chip = until(lambda d: d.find_elements(By.CSS_SELECTOR, "#suggest .chip"))
    assert [c.text for c in chip] == ["circle", "circles"]
    chip[0].click()
    prompt.send_keys("moving right")
    assert prompt.get_attribute("value") == "a red circle moving right"
    driver.find_element(By.ID, "seed").send_keys("4")
    driver.find_element(By.ID, "generate").click()

    frames, duration, src = until(lambda d: d.execute_script(PLAYING))
    assert frames == 9 and duration == pytest.approx(9 / 8, abs=0.15)  # 9 frames at 8 fps
    with urllib.request.urlopen(src) as response:  # the served clip itself has 9 frames
        (tmp_path / "downloaded.webm").write_bytes(response.read())
    clip, fps = read_video(tmp_path / "downloaded.webm")
    assert clip.shape == (9, 16, 16, 3) and fps == 8
    verdict = driver.find_element(By.ID, "verdict")
    assert verdict.is_displayed() and verdict.find_element(By.CLASS_NAME, "badge").text in (
        "PASS", "FAIL")
    assert "a red circle moving right" in driver.find_element(By.ID, "result-caption").text
    assert verdict.find_elements(By.CSS_SELECTOR, "svg.track polyline")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#gallery .card")) == 1

    height = driver.find_element(By.ID, "height")
    height.clear()
    height.send_keys("17")
    driver.find_element(By.ID, "generate").click()
    error = until(lambda d: d.find_element(By.ID, "error").is_displayed()
                  and d.find_element(By.ID, "error"))
    assert error.text.startswith("impossible size 9 frames of 17x16")
    height.clear()
    height.send_keys("16")
    driver.find_element(By.ID, "generate").click()  # the server still serves
    until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery .card")) == 2)
    assert not driver.find_element(By.ID, "error").is_displayed()

