"""The cleaner's audit trail and page: removed.jsonl lists every removal with text, step and reason; a person
marks a removal as wrong in a real headless browser; the next run with the allow-list keeps that document,
its config (hence the run fingerprint) changes, and its report counts it. The browser part is skipped only
where chromium, chromedriver or selenium are missing (as the ranking page's test)."""

from __future__ import annotations

import dataclasses
import json
import urllib.error
import urllib.request

import pyarrow.parquet as pq
import pytest
from lmforge.errors import ConfigError
from lmforge.plugins.cleaners.audit import AuditSession, start_server
from lmforge.plugins.cleaners.standard import StandardCleaner

PROSE = ("The committee met on Tuesday to discuss the new library building. Members agreed that the reading "
         "rooms should stay open later in the evening, and that the children's section needs more space. The "
         "architect presented three designs, and the vote will be held next month after residents comment.")
POEM = "Short poem kept by hand:\nthe river bends\nthe heron waits\nthe evening comes"
STEPS = ["normalize", {"name": "quality", "min_words": 20}, "exact_dedup"]


def clean(tmp_path, name, **params):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in [PROSE, POEM, PROSE]))
    out = tmp_path / "run" / name
    out.mkdir(parents=True)
    StandardCleaner(workers=1, steps=STEPS, **params).run({"text": str(source)}, out, _Quiet())
    return out, json.loads((out / "report.json").read_text())


class _Quiet:
    quiet = True

    def log_metrics(self, metrics):
        pass


def mark_in_browser(url: str, driver) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 20, poll_frequency=0.1)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "1")
    Select(driver.find_element(By.ID, "reason")).select_by_value("quality:too_few_words")
    docs = driver.find_elements(By.CSS_SELECTOR, "article.doc")
    assert len(docs) == 1 and "the heron waits" in docs[0].text
    docs[0].find_element(By.CSS_SELECTOR, "button.mark").click()
    wait.until(lambda d: d.find_element(By.ID, "allowed-count").get_attribute("data-count") == "1")
    assert "cleaner.allow_list=" in driver.find_element(By.ID, "command").text
    driver.refresh()  # the mark is on disk, not only in the page
    wait.until(lambda d: d.find_element(By.ID, "allowed-count").get_attribute("data-count") == "1")


def test_removed_documents_are_listed_marked_in_the_browser_and_come_back(tmp_path, headless_chromium):
    first, report = clean(tmp_path, "cleaner")
    removed = [json.loads(line) for line in (first / "removed.jsonl").read_text().splitlines()]
    assert [(r["step"], r["reason"]) for r in removed] == [("quality", "too_few_words"), ("exact_dedup", "duplicate")]
    assert removed[0]["text"] == POEM and removed[0]["where"].endswith("in.jsonl:2")
    assert report["docs_out"] == 1 and report["kept_by_allow_list"] == 0

    session = AuditSession(first)
    server = start_server(session)
    try:
        request = urllib.request.Request(server.url + "api/state", headers={"Host": "evil.example"})
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(request, timeout=10)  # DNS rebinding: a foreign Host is refused
        mark_in_browser(server.url, headless_chromium())  # skips here where chromium is absent
    finally:
        server.shutdown()
        server.server_close()
    allow = tmp_path / "run" / "cleaner.allow.json"
    assert json.loads(allow.read_text())["ids"] == [removed[0]["id"]]

    before = dataclasses.asdict(StandardCleaner(workers=1, steps=STEPS).config)
    after = dataclasses.asdict(StandardCleaner(workers=1, steps=STEPS, allow_list=str(allow)).config)
    assert before != after  # the pipeline fingerprints the stage config: the rerun is not skipped
    second, report = clean(tmp_path, "cleaner2", allow_list=str(allow))
    texts = pq.read_table(second / "data-00000.parquet").column("text").to_pylist()
    assert texts == [PROSE, POEM]  # the poem is back, the duplicate still goes
    assert report["kept_by_allow_list"] == 1 and report["allow_list_overruled"] == {"quality:too_few_words": 1}


def test_a_missing_allow_list_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cleaner.allow_list: .*nope.json not found"):
        StandardCleaner(allow_list=str(tmp_path / "nope.json"))
