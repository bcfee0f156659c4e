"""Take docs/studio.png: the `zoetrope serve` page on the bundled model, after a few generations.

    python scripts/studio_screenshot.py [--out docs/studio.png] [--steps N]

Runs the studio on a free port with its clips in a temporary folder, drives the page in headless
Chromium the way tests/test_serve_browser.py does (tests/browser.py), queues PROMPTS, waits for
them all and shows the first one in the result pane. A few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import browser  # noqa: E402

from zoetrope.pipeline import BUNDLED_MODEL, TextToVideoPipeline  # noqa: E402
from zoetrope.serve import Studio, StudioServer  # noqa: E402

PROMPTS = ["a red circle moving right", "a cyan triangle moving up", "a yellow square moving left"]


def shoot(out: Path, steps: int | None) -> None:
    """Generate PROMPTS through the page and save a screenshot of it to `out`."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as folder:
        studio = Studio(TextToVideoPipeline.from_pretrained(BUNDLED_MODEL), folder)
        server = StudioServer(studio, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        driver = browser.chromium(1280, 1000)
        try:
            driver.get(server.url)
            until = WebDriverWait(driver, 900).until
            until(lambda d: "words known" in d.find_element(By.ID, "model-line").text)
            if steps:
                driver.find_element(By.ID, "steps").clear()
                driver.find_element(By.ID, "steps").send_keys(str(steps))
            for seed, prompt in enumerate(PROMPTS):
                _type(driver, "prompt", prompt)
                _type(driver, "seed", str(seed))
                driver.find_element(By.ID, "generate").click()
            until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#gallery .card")) == len(PROMPTS))
            driver.find_elements(By.CSS_SELECTOR, "#gallery .card")[-1].click()  # the first made
            _type(driver, "prompt", "a red cir")  # show the suggested words
            until(lambda d: d.execute_script(
                "return [...document.querySelectorAll('video')].every(v => v.readyState >= 2)"))
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
            server.shutdown()
            studio.close(timeout=60)
    print(f"wrote {out}")


def _type(driver, element_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.ID, element_id)
    element.clear()
    element.send_keys(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "studio.png")
    parser.add_argument("--steps", type=int, help="DiT steps per clip (default: the model's)")
    args = parser.parse_args()
    if reason := browser.missing():
        sys.exit(f"cannot take the screenshot: {reason}")
    shoot(args.out, args.steps)


if __name__ == "__main__":
    main()
