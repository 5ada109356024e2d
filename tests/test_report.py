"""report.html (`detect --report`, `eval` by default): one self-contained page, nothing fetched;
thumbnails linked to the annotated images, filterable by class and score; eval's scores and
plots. And, where a Chromium and Playwright are installed, the page in a real headless browser:
it loads with no console errors, the filter changes what is visible, a screenshot is written."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from visiontool.data.synth import synth_detection

MODEL = ["--model", "shapes-tinyssd", "--workers", "0"]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class Resources(HTMLParser):
    """Every src/href of a page, and the figures of its grid."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.figures: list[dict[str, float]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("src", "href"):
            if values.get(key):
                self.urls.append(values[key] or "")
        if tag == "figure":
            self.figures.append(json.loads(values["data-scores"] or "{}"))


def parse(path: Path) -> Resources:
    parser = Resources()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def detect_report(tmp_path_factory):
    """A detect --report run over 6 synthetic images and one broken file."""
    from typer.testing import CliRunner

    from visiontool.cli.main import app

    root = tmp_path_factory.mktemp("report")
    synth_detection(root / "data", n=6, imgsz=128, seed=3, val_fraction=0.0)
    images = root / "data" / "images" / "train"
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    out = root / "out"
    result = CliRunner().invoke(app, ["detect", str(images), *MODEL, "--report", "--out",
                                      str(out), "--conf", "0.3"])  # fmt: skip
    assert result.exit_code == 1, result.output  # the broken file
    return out


def test_detect_report_is_self_contained_and_links_the_annotated_images(detect_report):
    page = parse(detect_report / "report.html")
    assert len(page.figures) == 6
    assert page.urls, "no images in the page"
    for url in page.urls:
        assert not re.match(r"^[a-z]+://", url), f"fetches {url}"
        if not url.startswith("data:"):
            assert (detect_report / url).is_file(), url  # a relative link that resolves
    text = (detect_report / "report.html").read_text()
    assert "Failed inputs" in text and "broken.jpg" in text
    found = [json.loads(line) for line in (detect_report / "predictions.jsonl").open()]
    labels = {d["label"] for line in found for d in line.get("detections", [])}
    assert {label for fig in page.figures for label in fig} == labels
    assert all(0.3 <= s <= 1.0 for fig in page.figures for s in fig.values())


def test_eval_writes_a_report_unless_told_not_to(cli, tmp_path):
    from tests.test_eval_cli import write_gt, write_jsonl

    gt, pred = write_gt(tmp_path), write_jsonl(tmp_path)
    result = cli("eval", "--data", gt, "--pred", pred, "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    page = parse(tmp_path / "a" / "report.html")
    assert all(u.startswith("data:image/png;base64,") for u in page.urls)
    assert len(page.urls) == 2  # the PR curves and the confusion matrix
    text = (tmp_path / "a" / "report.html").read_text()
    assert "<td>cat</td>" in text and "<td>dog</td>" in text and "map50" in text
    quiet = cli("eval", "--data", gt, "--pred", pred, "--out", tmp_path / "b", "--no-report")
    assert quiet.exit_code == 0
    assert not (tmp_path / "b" / "report.html").exists()


def test_eval_on_a_data_set_shows_its_images_with_predictions_and_truth(cli, tmp_path):
    data = tmp_path / "data"
    synth_detection(data, n=10, imgsz=128, seed=5)
    found = cli("detect", data / "images" / "val", *MODEL, "--out", tmp_path / "det")
    assert found.exit_code == 0, found.output
    scored = cli("eval", "--data", data, "--pred", tmp_path / "det" / "predictions.jsonl",
                 "--out", tmp_path / "ev")  # fmt: skip
    assert scored.exit_code == 0, scored.output
    page = parse(tmp_path / "ev" / "report.html")
    assert len(page.figures) == 2  # the val split's images
    assert all(u.startswith("data:image/") for u in page.urls)
    assert "ground truth in white" in (tmp_path / "ev" / "report.html").read_text()


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.mark.slow
def test_the_report_in_a_headless_browser(detect_report, tmp_path):
    browser_path = find_browser()
    if browser_path is None:
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    errors: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((detect_report / "report.html").as_uri())
        figures = page.locator("#grid figure:visible")
        assert figures.count() == 6
        scores = [json.loads(s) for s in page.eval_on_selector_all(
            "#grid figure", "els => els.map(e => e.dataset.scores)")]  # fmt: skip
        label = sorted({k for s in scores for k in s})[0]
        page.select_option("#cls", label)
        with_label = sum(label in s for s in scores)
        assert figures.count() == with_label
        assert page.inner_text("#shown") == str(with_label)
        page.eval_on_selector(
            "#score", "e => { e.value = '1'; e.dispatchEvent(new Event('input')) }"
        )
        assert figures.count() == sum(s.get(label, 0) >= 1.0 for s in scores)
        page.select_option("#cls", "all")
        page.eval_on_selector(
            "#score", "e => { e.value = '0'; e.dispatchEvent(new Event('input')) }"
        )
        assert figures.count() == 6
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert errors == []
    assert shot.stat().st_size > 10_000
