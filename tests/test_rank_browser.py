"""The ranking page in a real headless browser (Debian's chromium via selenium and the system chromedriver).

Open the page, rank two prompts (one by clicking, one by keys: a tie and an undo included), reload and see
the progress kept, export, and check the preference pairs written. Skipped only where chromium, chromedriver
or selenium are not installed (CI installs them: apt chromium chromium-driver, pip selenium).
"""

from __future__ import annotations

import json

import lmforge
from lmforge.plugins.lib.formats import load_preferences
from lmforge.plugins.rank.sampling import SamplingSettings, sample_candidates
from lmforge.plugins.rank.server import start_server
from lmforge.plugins.rank.session import RankSession


def _wait(driver, condition, what):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 20, poll_frequency=0.1).until(lambda d: condition(d), message=what)


def _done(driver) -> int:
    from selenium.webdriver.common.by import By

    return int(driver.find_element(By.ID, "progress").get_attribute("data-done") or -1)


def test_rank_two_prompts_by_click_and_keys_reload_export(browser, tmp_path, tiny_model_dir):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    directory = tmp_path / "session"
    session = sample_candidates(tiny_model_dir, lmforge.sample_data_path("prompts.jsonl"), directory,
                                SamplingSettings(k=3, max_new_tokens=10, max_prompts=2), device="cpu")
    server = start_server(session)
    try:
        browser.get(server.url + "?annotator=ada")
        _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", "page load")
        assert _done(browser) == 0
        assert browser.find_element(By.ID, "prompt").get_attribute("data-prompt-id") == "0"
        assert browser.find_element(By.ID, "annotator").get_attribute("value") == "ada"
        texts = [c.text for c in browser.find_elements(By.CSS_SELECTOR, ".cand")]
        assert len(texts) == 3 and session.prompts[0]["candidates"][1]["text"][:5] in texts[1]

        # prompt 1 by clicking: 2nd best of all, then the 1st; the 3rd is left over and goes last
        browser.find_element(By.CSS_SELECTOR, '.cand[data-candidate="1"]').click()
        browser.find_element(By.CSS_SELECTOR, '.cand[data-candidate="0"]').click()
        badges = {b.find_element(By.XPATH, "..").get_attribute("data-candidate"): b.get_attribute("data-rank")
                  for b in browser.find_elements(By.CSS_SELECTOR, ".badge")}
        assert badges == {"1": "1", "0": "2"}
        browser.find_element(By.ID, "submit").click()
        _wait(browser, lambda d: _done(d) == 1, "first ranking saved")
        assert browser.find_element(By.ID, "prompt").get_attribute("data-prompt-id") == "1"  # moved on

        # prompt 2 by keys: 2 (undone with Backspace), then 3, '=' ties 1 with it, Enter saves
        keys = ActionChains(browser)
        for key in ("2", Keys.BACKSPACE, "3", "=", "1", Keys.ENTER):
            keys.send_keys(key)
        keys.perform()
        _wait(browser, lambda d: _done(d) == 2, "second ranking saved")
        on_disk = RankSession(directory).judgements()["ada"]
        assert on_disk[0]["ranking"] == [[1], [0], [2]]
        assert on_disk[1]["ranking"] == [[2, 0], [1]]

        # reload: progress and the saved ranking come back from the server
        browser.refresh()
        _wait(browser, lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1", "reload")
        assert _done(browser) == 2 and "all done" in browser.find_element(By.ID, "progress").text
        ActionChains(browser).send_keys(Keys.ARROW_LEFT).perform()
        _wait(browser, lambda d: d.find_element(By.ID, "prompt").get_attribute("data-prompt-id") == "0", "prev")
        assert browser.find_element(By.CSS_SELECTOR, '.cand[data-candidate="1"] .badge').text == "#1"

        # export (the x key), then read the pairs the page wrote
        ActionChains(browser).send_keys("x").perform()
        _wait(browser, lambda d: d.find_element(By.ID, "export-result").get_attribute("data-pairs"), "export")
        exported = directory / "preferences.all_pairs.jsonl"
        rows = [json.loads(line) for line in exported.read_text().splitlines()]
        text = {(p["prompt_id"], c["id"]): c["text"] for p in session.prompts for c in p["candidates"]}
        expected = {(0, 1, 0), (0, 1, 2), (0, 0, 2), (1, 2, 1), (1, 0, 1)}
        expected = {e for e in expected if text[(e[0], e[1])] != text[(e[0], e[2])]}
        assert {(r["prompt_id"], r["chosen_id"], r["rejected_id"]) for r in rows} == expected
        for row in rows:
            assert row["chosen"] == text[(row["prompt_id"], row["chosen_id"])]
            assert row["annotators"] == ["ada"]
        assert len(load_preferences(exported)) == len(rows)
        assert int(browser.find_element(By.ID, "export-result").get_attribute("data-pairs")) == len(rows)
    finally:
        server.shutdown()
        server.server_close()
