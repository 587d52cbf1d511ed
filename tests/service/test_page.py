"""The web page in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium).

Skipped when the browser, its driver or selenium is missing (`make browser` installs them).
"""

from __future__ import annotations

import shutil
import tempfile

import pytest

from silodiff.service.server import background_server

CHROMIUM, DRIVER = (
    shutil.which("chromium") or "/usr/bin/chromium",
    shutil.which("chromedriver") or "/usr/bin/chromedriver",
)
pytestmark = pytest.mark.skipif(
    not (shutil.which("chromium") and shutil.which("chromedriver")),
    reason="needs Debian's chromium and chromium-driver (make browser)",
)


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="silodiff-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # the system browser: nothing is downloaded
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def sign_in(driver, key: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.ID, "key")
    field.clear()
    field.send_keys(key)
    driver.find_element(By.ID, "connect").click()


def test_page_generates_with_weight_bars_and_shows_the_admin_view(service_store, keys, app_factory, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    with background_server(app_factory(service_store)) as base:
        browser.get(base + "/")
        # a bad key: one line of error, nothing else shown
        sign_in(browser, "sdk_wrong")
        wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
        assert "401" in browser.find_element(By.ID, "error").text
        assert not browser.find_element(By.ID, "user").is_displayed()

        # alice: her two compartments only, no admin view; generate 3 images with weight bars
        sign_in(browser, keys["alice"])
        wait.until(lambda d: d.find_element(By.ID, "user").is_displayed())
        boxes = browser.find_elements(By.CSS_SELECTOR, "input[name=compartment]")
        assert [b.get_attribute("value") for b in boxes] == ["source-0", "source-1"]
        assert "key alice" in browser.find_element(By.ID, "whoami").text
        assert not browser.find_element(By.ID, "admin").is_displayed()
        for field, value in (("n", "3"), ("steps", "5")):
            browser.find_element(By.ID, field).clear()
            browser.find_element(By.ID, field).send_keys(value)
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .card img")) == 3)
        wait.until(
            lambda d: all(
                d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im) == 8
                for im in d.find_elements(By.CSS_SELECTOR, "#results .card img")
            )
        )
        for card in browser.find_elements(By.CSS_SELECTOR, "#results .card"):
            segs = card.find_elements(By.CSS_SELECTOR, ".bar .seg")
            assert {s.get_attribute("data-compartment") for s in segs} == {"source-0", "source-1"}
            widths = [float(browser.execute_script("return arguments[0].style.width", s).rstrip("%")) for s in segs]
            assert sum(widths) == pytest.approx(100, abs=0.1)
        assert "router trajectory" in browser.find_element(By.ID, "status").text

        # the admin: every compartment, and the event log shows alice's generation
        sign_in(browser, keys["admin"])
        wait.until(lambda d: d.find_element(By.ID, "admin").is_displayed())
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#events tbody tr[data-kind=generate]"))
        rows = browser.find_elements(By.CSS_SELECTOR, "#admin-compartments tbody tr")
        assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in rows] == ["source-0", "source-1", "source-2"]
        generated = browser.find_elements(By.CSS_SELECTOR, "#events tbody tr[data-kind=generate]")
        assert any(r.find_elements(By.TAG_NAME, "td")[3].text == "alice" for r in generated)
        assert keys["alice"] not in browser.page_source
