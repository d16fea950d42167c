"""The HTML report: one self-contained page per run or per comparison, checked as text and in a real
headless browser (Debian's Chromium through Playwright; skipped when it is not installed)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

import dlzoo
from dlzoo.report.html import write_report
from dlzoo.report.plots import plot_curves

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
FIGURES_PER_RUN = 3  # loss/accuracy curves, learning rate, confusion matrix
IMAGE_SRC = re.compile(r'<img [^>]*src="data:image/png;base64,([^"]+)"')
CAPTION = re.compile(r"true: (\S+) / predicted: (\S+) \(p=([0-9.]+)\)")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two real two-epoch digits-lenet5 runs that differ in their learning rate."""
    runs_dir = str(tmp_path_factory.mktemp("runs"))
    base = ["train.epochs=2", "train.threads=1", "log.tensorboard=false"]
    return [
        dlzoo.train("digits-lenet5", base + extra, runs_dir=runs_dir, quiet=True).run_dir
        for extra in ([], ["optim.lr=0.001"])
    ]


def embedded_pngs(page: str) -> list[Image.Image]:
    """Every <img> source of the page, decoded and verified as a PNG."""
    images = []
    for data in IMAGE_SRC.findall(page):
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        assert image.format == "PNG"
        image.load()  # decodes the whole image: a truncated PNG fails here
        images.append(image)
    return images


def copy_run(run: Path, destination: Path, edit_config=None, edit_info=None) -> Path:
    """A copy of a run folder with config.json / run.json changed by the given functions."""
    copied = Path(shutil.copytree(run, destination / run.name))
    for name, edit in (("config.json", edit_config), ("run.json", edit_info)):
        if edit is not None:
            payload = json.loads((copied / name).read_text())
            edit(payload)
            (copied / name).write_text(json.dumps(payload))
    return copied


def test_one_run_page_shows_metrics_figures_and_confident_mistakes(runs: list[Path]) -> None:
    run = runs[0]
    path = write_report([run])
    assert path == run / "report.html"
    page = path.read_text()
    info = json.loads((run / "run.json").read_text())
    assert "digits-lenet5" in page
    assert f"{info['test']['test_accuracy']:.4f}" in page
    assert "best checkpoint (epoch" in page
    assert 'src="http' not in page and "<script" not in page

    captions = CAPTION.findall(page)
    wrong_total = int(re.search(r"(\d+) of 359 test images are misclassified", page).group(1))
    assert len(captions) == min(16, wrong_total) > 0
    classes = [str(digit) for digit in range(10)]
    for true, predicted, _ in captions:
        assert true in classes and predicted in classes and true != predicted
    probabilities = [float(p) for _, _, p in captions]
    assert probabilities == sorted(probabilities, reverse=True)

    images = embedded_pngs(page)
    assert len(images) == FIGURES_PER_RUN + len(captions)
    examples = images[FIGURES_PER_RUN:]
    assert all(image.size == (96, 96) for image in examples)  # 8x8 digits upscaled 12 times


def test_comparison_names_both_runs_and_what_differs(
    runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = write_report(runs, wrong_examples=4)
    assert path == tmp_path / "report-compare.html"
    page = path.read_text()
    labels = [f"digits-lenet5/{run.name}" for run in runs]
    assert all(label in page for label in labels)
    differ = page[page.index("Settings that differ") :]
    assert "optim.lr" in differ and "0.001" in differ
    assert "train.epochs" not in differ  # shared settings stay out of that table
    for run in runs:
        accuracy = json.loads((run / "run.json").read_text())["test"]["test_accuracy"]
        assert f"{accuracy:.4f}" in page
    comparison_figure = 1
    assert len(embedded_pngs(page)) == comparison_figure + 2 * FIGURES_PER_RUN + len(CAPTION.findall(page))


def test_unfinished_run_is_reported_with_a_note_and_text_is_escaped(runs: list[Path], tmp_path: Path) -> None:
    def unfinish(info: dict) -> None:
        info["status"] = "running"
        for key in ("test", "test_checkpoint", "finished", "train_seconds"):
            info.pop(key)

    def describe(config: dict) -> None:
        config["meta"]["description"] = "<b>bold & new</b>"

    run = copy_run(runs[0], tmp_path, edit_config=describe, edit_info=unfinish)
    (run / "confusion.json").unlink()
    page = write_report([run], output=tmp_path / "out" / "page.html").read_text()
    assert "This run is running, not finished" in page
    assert "No test measurement yet" in page
    assert "No confusion.json" in page
    assert "&lt;b&gt;bold &amp; new&lt;/b&gt;" in page and "<b>bold" not in page
    assert len(embedded_pngs(page)) >= 2  # the curves are still drawn from metrics.jsonl


def test_missing_data_is_a_note_not_a_crash_and_never_a_download(runs: list[Path], tmp_path: Path) -> None:
    def elsewhere(config: dict) -> None:
        config["data"]["name"] = "mnist"  # not present in the empty folder below
        config["data"]["download"] = True  # the report must switch this off

    run = copy_run(runs[0], tmp_path, edit_config=elsewhere)
    empty = tmp_path / "no-data"
    empty.mkdir()
    page = write_report([run], data_dir=str(empty)).read_text()
    assert "The test data could not be loaded" in page and "MNIST not found" in page
    assert not CAPTION.search(page)
    assert len(embedded_pngs(page)) == FIGURES_PER_RUN
    assert list(empty.iterdir()) == []


def test_wrong_examples_zero_skips_the_model(runs: list[Path], tmp_path: Path) -> None:
    page = write_report([runs[0]], output=tmp_path, wrong_examples=0).read_text()
    assert (tmp_path / "report.html").is_file()
    assert "Not requested" in page and not CAPTION.search(page)
    with pytest.raises(ValueError, match=r"wrong_examples \(--wrong-examples\) must be 0 or more"):
        write_report([runs[0]], wrong_examples=-1)


def test_bad_run_folders_raise_clear_errors(runs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="is not a dlzoo run folder"):
        write_report([tmp_path])
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        write_report([tmp_path / "missing"])
    with pytest.raises(FileNotFoundError, match=f"holds runs, it is not one: .*{runs[-1].name}"):
        write_report([runs[0].parent])
    with pytest.raises(ValueError, match="given twice"):
        write_report([runs[0], runs[0]])
    with pytest.raises(ValueError, match="no run folder given"):
        write_report([])


def test_plot_curves_still_writes_a_png(runs: list[Path], tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (runs[0] / "metrics.jsonl").read_text().splitlines()]
    path = plot_curves(rows, tmp_path / "curves.png", "title")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (1100, 400)


def test_page_renders_in_headless_chromium(runs: list[Path], tmp_path: Path) -> None:
    chromium = CHROMIUM if CHROMIUM.is_file() else shutil.which("chromium")
    if chromium is None:
        pytest.skip("no Chromium at /usr/bin/chromium: install it with `apt-get install chromium`")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip install playwright (no browser download)"
    )
    report = write_report(runs, output=tmp_path / "report.html", wrong_examples=8)
    problems, requests = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(report.as_uri(), wait_until="load")
            widths = page.evaluate("Array.from(document.images, image => image.naturalWidth)")
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    assert len(widths) == len(IMAGE_SRC.findall(report.read_text())) > 1 + 2 * FIGURES_PER_RUN
    assert all(width > 0 for width in widths)
    with Image.open(tmp_path / "report.png") as screenshot:
        assert screenshot.width == 1280 and screenshot.height > 2000
        assert len(screenshot.convert("L").getcolors()) > 50  # not a blank or one-colour page
