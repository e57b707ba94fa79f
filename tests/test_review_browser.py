"""The review page in a real headless Chromium: it refuses without the key, shows catalog markup as text, and a
reviewer decides 20 items with the keyboard alone; the store and search change, and undo puts things back.
Set SHOPTAG_REVIEW_SCREENSHOTS to a folder to keep the page's screenshots (docs/REVIEW.md uses them)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browser import chromium, require_browser
from fixtures_review import HOSTILE_ID, HOSTILE_TITLE, copy_of
from service_helpers import API_KEY, thread_server
from shoptag.store.review_log import open_review_log
from shoptag.pipeline.workspace import Workspace

require_browser()

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

# reject, accept, pick another, type another value: 20 decisions
KEYS = ["x", "a", "2", "a", "3", "a", "x", "2", "a", "a", "o", "a", "2", "a", "3", "a", "x", "2", "a", "a"]
TYPED = "Hand-made 手工"


@pytest.fixture(scope="module")
def site(review_workspace, tmp_path_factory) -> Iterator[tuple[str, object, object]]:
    settings = copy_of(review_workspace, tmp_path_factory.mktemp("review-ui") / "ws")
    with thread_server(settings) as url, chromium() as driver:
        yield url, settings, driver


def shot(driver, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    if os.environ.get("SHOPTAG_REVIEW_SCREENSHOTS"):
        target = Path(os.environ["SHOPTAG_REVIEW_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)


def wait(driver, condition, timeout: float = 30):
    return WebDriverWait(driver, timeout).until(lambda d: condition(d))


def press(driver, key: str) -> None:
    ActionChains(driver).send_keys(key).perform()


def test_refuses_without_the_key(site, tmp_path):
    url, _, driver = site
    assert httpx.get(f"{url}/ui/review", follow_redirects=False).status_code == 303
    assert httpx.get(f"{url}/ui/image", params={"id": "sp-001"}).status_code == 401
    driver.get(f"{url}/ui/review")
    assert "/ui/login" in driver.current_url and not driver.find_elements(By.CSS_SELECTOR, "article.item")
    driver.find_element(By.NAME, "key").send_keys("not-the-key")
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    assert wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".error"))[0].text == "Wrong API key."
    assert not driver.find_elements(By.CSS_SELECTOR, "article.item")
    shot(driver, tmp_path, "review-login")


def sign_in(driver, url: str, name: str) -> None:
    driver.get(f"{url}/ui/login")
    driver.find_element(By.NAME, "key").send_keys(API_KEY)
    driver.find_element(By.NAME, "reviewer").send_keys(name)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "article.item.current"))


def test_catalog_markup_shows_as_text(site):
    url, settings, driver = site
    sign_in(driver, url, "bea")
    driver.get(f"{url}/ui/review?view=grid")
    store = Workspace(settings.workspace).open_store()
    try:
        assert store.products([HOSTILE_ID])[0].title == HOSTILE_TITLE  # the markup really is in the store
    finally:
        store.close()
    hostile = driver.find_elements(By.CSS_SELECTOR, f'article.item[data-id="{HOSTILE_ID}"] .title')
    assert hostile and all(h.text == HOSTILE_TITLE for h in hostile)
    assert driver.execute_script("return window.__pwned === undefined")
    assert not driver.find_elements(By.CSS_SELECTOR, 'article.item img[src="x"]')


def facet(url: str, family: str, value: str) -> int:
    found = httpx.get(f"{url}/search", params={"facet": family, "size": 1}).json()["facets"].get(family, [])
    return next((f["count"] for f in found if f["value"] == value), 0)


def test_review_twenty_with_the_keyboard_then_undo(site, tmp_path):
    url, settings, driver = site
    sign_in(driver, url, "bea")
    driver.get(f"{url}/ui/review")
    wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "article.item.current"))
    shot(driver, tmp_path, "review-one")
    expected = []  # (product, family, values) the store should hold
    for key in KEYS:
        item = driver.find_element(By.CSS_SELECTOR, "article.item.current")
        pid, family = item.get_attribute("data-id"), item.get_attribute("data-family")
        values = [b.get_attribute("data-value") for b in item.find_elements(By.CSS_SELECTOR, ".cand")]
        if key in "23" and len(values) < int(key):
            key = "a"
        press(driver, key)
        if key == "o":
            ActionChains(driver).send_keys(TYPED, Keys.ENTER).perform()
        wait(driver, lambda d, item=item: "done" in item.get_attribute("class"))
        set_to = {"x": [], "o": [TYPED], "a": values[:1]}[key] if key in "xoa" else [values[int(key) - 1]]
        expected.append((pid, family, set_to))
    assert driver.find_element(By.ID, "stat-decisions").text == "20"
    shot(driver, tmp_path, "review-decided")

    store = Workspace(settings.workspace).open_store()
    try:
        decisions = open_review_log(store).decisions(where="reviewer = 'bea' AND undone_at IS NULL")
        assert [(d.product_id, d.family, d.values) for d in decisions] == expected
        known = store.known_tags()
        for pid, family, values in expected:
            assert known[pid].get(family, []) == values
    finally:
        store.close()
    pid, family, values = next(e for e in expected if e[2])
    tags = httpx.get(f"{url}/products/{pid}").json()["tags"][family]
    assert [(t["value"], t["source"]) for t in tags] == [(v, "feedback") for v in values]
    counted = facet(url, family, values[0])
    assert counted >= sum(1 for e in expected if e[1] == family and e[2] == values)

    # undo the last decision from the keyboard: the item is pending again, the store and search back as they were
    last_pid, last_family, last_values = expected[-1]
    assert last_values, "the last key accepts"
    before = facet(url, last_family, last_values[0])
    press(driver, "u")
    undone = driver.find_element(By.CSS_SELECTOR, f'article.item[data-id="{last_pid}"][data-family="{last_family}"]')
    wait(driver, lambda d: "done" not in undone.get_attribute("class") and "current" in undone.get_attribute("class"))
    assert driver.find_element(By.ID, "stat-decisions").text == "19"
    store = Workspace(settings.workspace).open_store()
    try:
        assert last_family not in store.known_tags().get(last_pid, {})
        assert [t.source for t in store.tags_of(last_pid) if t.family == last_family] == ["model"]
    finally:
        store.close()
    assert facet(url, last_family, last_values[0]) == before - 1
    press(driver, "g")
    wait(driver, lambda d: "view-grid" in d.find_element(By.TAG_NAME, "body").get_attribute("class"))
    driver.execute_script("window.scrollTo(0, 0)")
    shot(driver, tmp_path, "review-grid")
