"""bench.analysis.report: results/report.html of a micro-world sweep, checked as HTML and in a real headless Chromium."""
from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from bench.analysis.leaderboard import write_leaderboard
from tests.helpers import SHRINK, bench_cli

SWEEP = ["method=none,watermarkdm", "attack=full_ft", "attack.steps=2", "seed=0,1", "-m", *SHRINK]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"
SCREENSHOT = Path("/tmp/report_micro.png")


class Page(HTMLParser):
    """The parts of the page the tests look at: tables by class (rows of cell texts), images, details."""

    def __init__(self, html: str):
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.images: list[str] = []
        self.details: list[str] = []
        self._table = self._cell = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("class", ""), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "details":
            self.details.append(a.get("class", ""))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def sweep(shared_cache, tmp_path_factory) -> Path:
    """A 2 methods x 2 seeds micro sweep; the leaderboard, and with it the report, is written at its end."""
    results = tmp_path_factory.mktemp("report_results")
    bench_cli(SWEEP, results, shared_cache, check=True)
    return results


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as err:
        pytest.skip(f"selenium cannot be imported ({err}): pip install selenium")
    binary = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    driver_path = CHROMEDRIVER if Path(CHROMEDRIVER).is_file() else shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip(f"Debian's chromium and chromium-driver are not installed: {INSTALL}")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1400,2400", f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def load(driver, page: Path) -> list[dict]:
    """Open the page as a file, wait until every image has loaded; return the console messages."""
    from selenium.webdriver.support.ui import WebDriverWait
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(page.resolve().as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && Array.from(document.images).every(i => i.complete)"))
    return driver.get_log("browser")


def column(driver, col: int) -> list[str]:
    return driver.execute_script(
        "return Array.from(document.querySelector('table.leaderboard').tBodies[0].rows).map(r => "
        "r.cells[arguments[0]].hasAttribute('data-v') ? r.cells[arguments[0]].getAttribute('data-v') : "
        "r.cells[arguments[0]].textContent.trim())", col)


def test_report_written_with_leaderboard_survival_and_images(sweep):
    page = Page((sweep / "report.html").read_text())
    board = page.tables["sortable leaderboard"]
    assert len(board) - 1 == len(pd.read_csv(sweep / "leaderboard.csv")) == 2
    assert "sortable survival" in page.tables and len(page.tables["sortable survival"]) >= 2
    # the numbers are exactly leaderboard.md's cells (same order of metric columns, after n)
    md = [[c.strip() for c in line.strip("|").split("|")] for line in (sweep / "leaderboard.md").read_text().splitlines()
          if line.startswith("|") and not line.startswith("|---")]
    n_at = md[0].index("n")
    assert [h for h in board[0][board[0].index("n"):]] == md[0][n_at:]
    for md_row in md[1:]:
        assert md_row[n_at:] in [row[board[0].index("n"):] for row in board[1:]], md_row
    assert "↑" in "".join(board[0]) and "↓" in "".join(board[0])
    assert any(" ± " in c for row in board[1:] for c in row)
    # plots and sample grids embedded; one <details> per run
    pngs = [p.name for p in sweep.glob("*.png")]
    assert any(n.startswith("robustness_") for n in pngs) and any(n.startswith("lmc_") for n in pngs) \
        and any(n.startswith("tradeoff_") for n in pngs)
    assert len(page.images) == len(pngs) + 2 and all(s.startswith("data:image/png;base64,") for s in page.images)
    assert page.details.count("run") == 4
    html = (sweep / "report.html").read_text()
    assert "watermarked + trigger" in html and 'src="http' not in html and 'href="http' not in html
    assert str(sweep.resolve()) in html


def test_report_in_chromium(sweep, browser):
    logs = load(browser, sweep / "report.html")
    assert not [e for e in logs if e["level"] == "SEVERE"], logs
    rows = browser.execute_script("return document.querySelectorAll('table.leaderboard tbody tr').length")
    assert rows == len(pd.read_csv(sweep / "leaderboard.csv")) == 2
    widths = browser.execute_script("return Array.from(document.images).map(i => i.naturalWidth)")
    assert len(widths) >= 4 and all(w > 0 for w in widths), widths
    assert browser.execute_script("return document.querySelectorAll('details.run').length") == 4
    browser.execute_script("document.querySelector('details.run').open = true")  # one run's config in the picture
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(max(height, 2400), 8000))
    browser.save_screenshot(str(SCREENSHOT))  # for a look by eye, not asserted
    browser.set_window_size(1400, 2400)


def test_clicking_a_header_sorts(sweep, browser):
    from selenium.webdriver.common.by import By
    load(browser, sweep / "report.html")
    headers = browser.find_elements(By.CSS_SELECTOR, "table.leaderboard thead th")
    titles = [h.text.strip() for h in headers]
    method = titles.index("method")
    # a numeric column whose values differ between the rows: ascending, then descending, numerically
    numeric = next(i for i in range(len(titles)) if i > titles.index("n")
                   and all(v for v in column(browser, i)) and len(set(column(browser, i))) == len(column(browser, i)))
    headers[numeric].click()
    up = [float(v) for v in column(browser, numeric)]
    first = column(browser, method)
    assert up == sorted(up)
    headers[numeric].click()
    down = [float(v) for v in column(browser, numeric)]
    assert down == sorted(down, reverse=True) and column(browser, method) == first[::-1]
    headers[method].click()
    assert column(browser, method) == sorted(column(browser, method))
    headers[method].click()
    assert column(browser, method) == sorted(column(browser, method), reverse=True)
    assert headers[method].get_attribute("aria-sort") == "descending"


def test_sample_grids_linked_beyond_the_embed_limit(sweep, browser, tmp_path, monkeypatch):
    """Over the limit, the grids are relative paths beside the page, and they load opened as a file."""
    import bench.analysis.report
    folder = tmp_path / "results"
    shutil.copytree(sweep, folder, ignore=shutil.ignore_patterns("hydra", "report.html"))
    monkeypatch.setattr(bench.analysis.report, "EMBED_LIMIT", 0)
    page = bench.analysis.report.write_report(folder)
    linked = [s for s in Page(page.read_text()).images if not s.startswith("data:")]
    assert len(linked) == 2 and all(s.startswith("records/") and (folder / s).is_file() for s in linked)
    logs = load(browser, page)
    assert not [e for e in logs if e["level"] == "SEVERE"], logs
    widths = browser.execute_script("return Array.from(document.images).map(i => i.naturalWidth)")
    assert all(w > 0 for w in widths), widths


def test_report_of_failed_records_only(tmp_path):
    from bench.record import write_record
    from tests.test_leaderboard import planned, record_from
    for seed in (0, 1):  # failed records as the runner writes them (record format, identity, config)
        rec = record_from(planned([f"seed={seed}"], method="watermarkdm"), status="failed")
        rec.update(error="RuntimeError: out of <memory>", traceback="Traceback ...", timings={})
        write_record(tmp_path / "records" / rec["run_id"] / "record.json", rec)
    write_leaderboard(tmp_path)
    html = (tmp_path / "report.html").read_text()
    page = Page(html)
    assert page.details.count("run") == 2 and len(page.tables["sortable leaderboard"]) == 2
    assert "out of &lt;memory&gt;" in html and "No complete record" in html and not page.images
