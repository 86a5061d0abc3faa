"""A real browser: headless Chromium driven by Playwright uploads a video, waits for the chart and
the table, corrects a label (and sees a bad one reverted), downloads the MELD CSV and saves
screenshots (to $WORKBENCH_SCREENSHOTS if set, else the test's tmp folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.meld import read_meld_csv
from tests.serving import start_workbench

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="needs /usr/bin/chromium: apt-get install -y chromium")


@pytest.fixture(scope="module")
def app_url(models, tmp_path_factory):
    demo, _ = start_workbench(models, tmp_path_factory.mktemp("browser-data"))
    yield demo.local_url
    demo.close()


def cell(page, row: int, col: int):
    return page.locator(f'#transcript [data-testid="cell-{row}-{col}"]')


def test_upload_analyse_correct_download(app_url, talking_video, tmp_path):
    from playwright.sync_api import expect, sync_playwright
    shots = Path(os.environ.get("WORKBENCH_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            page.goto(app_url, wait_until="load")
            expect(page.locator("#banner")).to_contain_text("decided from")
            page.locator("#video-in input[type=file]").set_input_files(str(talking_video))
            page.wait_for_selector("#video-in video", state="attached")
            page.locator("#analyse-video").click()

            # the chart and the table
            page.wait_for_selector("#chart g.barlayer path", state="attached", timeout=300_000)
            expect(page.locator("#transcript [role=grid]")).to_have_attribute("aria-rowcount", "4")
            expect(cell(page, 0, 7)).to_contain_text("door")

            # select an utterance: the editor follows and the player seeks to it
            start = float(cell(page, 1, 4).inner_text().split()[0])
            cell(page, 1, 7).click()
            expect(page.locator("#editor-title")).to_contain_text("Utterance 1")
            page.wait_for_function(
                f"Math.abs((document.querySelector('#player video')?.currentTime ?? -9) - {start}) < 0.3")

            # correct its emotion with the dropdown
            current = cell(page, 1, 1).inner_text().split()[0]
            target = "anger" if current != "anger" else "sadness"
            page.locator("#ed-emotion input").click()
            page.locator("ul[role=listbox] li", has_text=target).first.click()
            expect(cell(page, 1, 1)).to_contain_text(target)
            expect(cell(page, 1, 8)).to_contain_text("✎ emotion")
            expect(page.locator("#status")).to_contain_text("Saved")

            # an invalid label typed into the table is reverted with a message
            sentiment = cell(page, 0, 2).inner_text().split()[0]
            cell(page, 0, 2).dblclick()
            editor = cell(page, 0, 2).locator("textarea, input").first
            editor.fill("ecstatic")
            editor.press("Enter")
            expect(page.locator("#status")).to_contain_text("Reverted")
            expect(cell(page, 0, 2)).to_contain_text(sentiment)
            page.screenshot(path=str(shots / "workbench.png"), full_page=True)

            # export and download the MELD CSV
            page.locator("#export-csv").click()
            link = page.locator("#export-file a[download]").first
            link.wait_for(state="attached")
            with page.expect_download() as download:
                link.click()
            csv_path = tmp_path / "download.csv"
            download.value.save_as(csv_path)

            # a page reload brings the work back from the autosave
            page.reload(wait_until="load")
            expect(page.locator("#status")).to_contain_text("Restored")
            expect(cell(page, 1, 1)).to_contain_text(target)
        except Exception:
            page.screenshot(path=str(shots / "failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    table = read_meld_csv(csv_path)
    assert table.ok, table.problems
    assert [r.emotion for r in table.rows][1] == target
    assert [r.sentiment for r in table.rows][0] == sentiment
    assert (shots / "workbench.png").stat().st_size > 50_000
