"""``unildiff demo`` in a real browser: Debian's headless Chromium driven by Selenium, on the smoke model.

The test starts the command a user types (``unildiff demo``, a subprocess on a free loopback port) on the
smoke pipeline's model and drives the page as a user does: upload a degraded test crop, pick its task,
press Restore, read the full-resolution download back; then a corrupt file (the page says why, the
server keeps serving), a setting the model was not trained for (the CLI's message), and the HTTP API
(``gradio_client``), whose pixels must equal ``unildiff restore``'s with the same settings.

It never skips: without Chromium and its driver (``apt-get install chromium chromium-driver``, which
``.ci/run`` does) it fails, saying so. The page with its result is saved as a screenshot in the test's
folder, and to ``$UNILDIFF_DEMO_SCREENSHOT`` when set (how docs/images/demo.png is made).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from unildiff.data.manifest import read_manifest
from unildiff.imageio import LoadedImage, read_image

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1200",
)
STARTUP_S = 900
"""How long the server may take to print its address (imports and model loading on a busy 2-core host)."""
REQUEST_S = 600
"""How long one restoration may take in the page."""
TASK = "denoise_50"
"""The example's task: the smoke set's noisiest crops, where the check against the input has room."""


REPO_ENV = "UNILDIFF_DEMO_REPO"
"""A repository with a trained model and its prepared data (e.g. ``.`` after the tiny ``dvc repro``) to
run these tests on instead of the smoke run."""


@dataclass
class Demo:
    """A running ``unildiff demo`` on the model of ``repo``."""

    url: str
    process: subprocess.Popen
    repo: Path

    @property
    def model(self) -> Path:
        return self.repo / "models" / "unildiff"

    @property
    def prepared(self) -> Path:
        return self.repo / "data" / "prepared"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment.get('PATH', '')}"
    environment["GRADIO_ANALYTICS_ENABLED"] = "False"
    return environment


@pytest.fixture(scope="module")
def demo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """``unildiff demo`` on the smoke model (or ``$UNILDIFF_DEMO_REPO``'s), on a free loopback port."""
    given = os.environ.get(REPO_ENV)
    repo = Path(given).resolve() if given else request.getfixturevalue("smoke_pipeline")
    folder = tmp_path_factory.mktemp("demo")
    log = folder / "demo.log"
    command = [
        "unildiff", "demo", "--model", str(repo / "models" / "unildiff"),
        "--examples", str(repo / "data" / "prepared"), "--port", str(_free_port()),
    ]  # fmt: skip
    with log.open("w") as stream:
        process = subprocess.Popen(
            command, cwd=folder, env=_environment(), stdout=stream, stderr=subprocess.STDOUT, text=True
        )
    try:
        deadline = time.monotonic() + STARTUP_S
        while not (found := re.search(r"UniLDiff demo on (http://127\.0\.0\.1:\d+/?)", log.read_text())):
            if process.poll() is not None:
                pytest.fail(f"unildiff demo exited {process.returncode}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"unildiff demo printed no address in {STARTUP_S} s:\n{log.read_text()[-4000:]}")
            time.sleep(1)
        yield Demo(found.group(1).rstrip("/") + "/", process, repo)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def browser():
    """Headless Chromium through Debian's chromedriver; fails (never skips) when it cannot start."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: apt-get install -y chromium chromium-driver (.ci/run does)"
        )
    profile = tempfile.mkdtemp(prefix="unildiff-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    except WebDriverException as error:
        pytest.fail(f"headless Chromium did not start: {error.msg}")
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _psnr(image: np.ndarray, reference: np.ndarray) -> float:
    mse = float(np.mean((image.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return 10 * np.log10(1.0 / mse)


def _example(prepared: Path) -> tuple[Path, Path]:
    row = next(row for row in read_manifest(prepared) if row.split == "test" and row.task == TASK)
    return prepared / row.lq_path, prepared / row.gt_path


class Page:
    """The demo page in the browser, through its element ids."""

    def __init__(self, driver, url: str):
        self.driver = driver
        driver.get(url)
        self.wait(lambda: self.all("#image input[type=file]"), 120, "the page's upload field")

    def all(self, selector: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def text(self, selector: str) -> str:
        found = self.all(selector)
        return found[0].text if found else ""

    def wait(self, condition, seconds: float, what: str):
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, seconds, poll_frequency=0.3).until(lambda _: condition())
        except TimeoutException:
            pytest.fail(f"timed out after {seconds} s waiting for {what}; page text:\n{self.body()[-3000:]}")

    def body(self) -> str:
        return self.driver.execute_script("return document.body.innerText")

    def upload(self, path: Path) -> str:
        """Upload ``path`` (after clearing the field); the page's line about it once it shows."""
        clear = self.all("#image button[aria-label=Clear]")
        if clear:
            clear[0].click()
            self.wait(lambda: not self.text("#info"), 30, "the previous input's line to clear")
        field = self.wait(lambda: self.all("#image input[type=file]"), 30, "an empty upload field")
        field[0].send_keys(str(path))
        self.wait(lambda: path.name in self.text("#image").replace("\n", ""), 60, f"{path.name} uploaded")

        def line() -> str | None:
            text = self.text("#info")
            return text if text.startswith(("Input: ", "error: ")) else None

        return self.wait(line, 60, f"the line about {path.name}")

    def pick_task(self, task: str, prompt: str) -> None:
        """Choose ``task`` in the selector; waits for the line that shows ``prompt`` will be sent."""
        self.all("#task input")[0].click()
        options = self.wait(lambda: self.all("ul[role=listbox] li"), 30, "the task list")
        next(option for option in options if option.text.strip().startswith(f"{task}:")).click()
        line = f'Prompt sent: "{prompt}"'
        self.wait(lambda: self.text("#prompt") == line, 30, line)

    def restore(self) -> str:
        """Press Restore; the download link's address once the result is there."""
        self.all("#restore")[0].click()
        links = self.wait(lambda: self.all("#download a[href]"), REQUEST_S, "the download link")
        return links[0].get_attribute("href")

    def error_toast(self, expected: str, seconds: float = 60) -> list[str]:
        """The lines of the error message that contains ``expected``, once it shows."""

        def toast() -> list[str]:
            texts = [element.text for element in self.all("[data-testid=toast-body]")]
            return next((text.splitlines() for text in texts if expected in text), [])

        return self.wait(toast, seconds, f"an error message with {expected!r}")

    def close_toasts(self) -> None:
        for button in self.all("[data-testid=toast-body] button, [data-testid=toast-close]"):
            with contextlib.suppress(Exception):
                button.click()


def _download(url: str, destination: Path) -> Path:
    with urllib.request.urlopen(url, timeout=60) as response:
        destination.write_bytes(response.read())
    return destination


def _unildiff(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the ``unildiff`` command as a user does; its output is kept for the assertions."""
    return subprocess.run(
        ["unildiff", *arguments], cwd=cwd, env=_environment(), capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip


def _cli_restore(demo: Demo, lq_path: Path, output: Path, *flags: str) -> LoadedImage:
    """``unildiff restore`` of ``lq_path`` with ``--task TASK`` and ``flags``: the image it writes."""
    arguments = [str(lq_path), "-o", str(output), "--model", str(demo.model), "--task", TASK, *flags]
    completed = _unildiff("restore", *arguments, cwd=output.parent)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return read_image(output / lq_path.name)


def _evaluation_beats_input(repo: Path, task: str) -> bool:
    """Whether the ``evaluate`` stage measured the model above its input on ``task`` (PSNR).

    The smoke model (a few training steps) is far below its inputs (about 11 dB against 15 to 25), so
    on it the page is checked to give exactly what the pipeline gives; on a model that restores (the
    tiny preset: every task above its input) the page's result must be closer to the clean crop too.
    """
    import json

    metrics = repo / "reports" / "metrics.json"
    if not metrics.is_file():
        return False
    values = json.loads(metrics.read_text())
    scores = [
        values.get(key, {}).get("per_task", {}).get(task, {}).get("psnr") for key in ("input", "restored")
    ]
    return None not in scores and scores[1] > scores[0]


def _model_tasks(model: Path) -> dict[str, str]:
    import json

    return dict(json.loads((model / "model_index.json").read_text())["tasks"])


def test_page_restores_an_uploaded_crop_and_offers_the_full_resolution_png(demo, browser, tmp_path):
    lq_path, gt_path = _example(demo.prepared)
    page = Page(browser, demo.url)
    lq = read_image(lq_path)
    assert page.upload(lq_path) == f"Input: {lq.width}×{lq.height}, RGB, 8-bit"
    page.pick_task(TASK, _model_tasks(demo.model)[TASK])  # fails unless the prompt line shows it
    restored = read_image(_download(page.restore(), tmp_path / "restored.png"))
    assert (restored.height, restored.width) == (lq.height, lq.width)
    assert (restored.channels, restored.bit_depth) == (lq.channels, lq.bit_depth)
    cli = _cli_restore(demo, lq_path, tmp_path / "cli")  # the recorded settings, as the page's
    assert np.array_equal(restored.rgb, cli.rgb), "the page's PNG differs from `unildiff restore`'s"
    gt = read_image(gt_path).rgb
    psnr_in, psnr_out = _psnr(lq.rgb, gt), _psnr(restored.rgb, gt)
    print(f"{lq_path.name}: input {psnr_in:.2f} dB, restored in the page {psnr_out:.2f} dB")
    if _evaluation_beats_input(demo.repo, TASK):
        assert psnr_out > psnr_in, (
            f"restored {psnr_out:.2f} dB, not closer to the clean crop than {psnr_in:.2f}"
        )
    assert page.all("#slider img") and page.all("#restored img")
    assert re.search(r"prompt \"[^\"]+\"; steps \d+, seed \d+; [\d.]+ s", page.text("#summary"))
    browser.execute_script("window.scrollTo(0, 0)")
    browser.save_screenshot(str(tmp_path / "demo.png"))
    if os.environ.get("UNILDIFF_DEMO_SCREENSHOT"):
        shutil.copyfile(tmp_path / "demo.png", os.environ["UNILDIFF_DEMO_SCREENSHOT"])


def test_a_corrupt_upload_is_explained_and_the_next_request_succeeds(demo, browser, tmp_path):
    lq_path, _ = _example(demo.prepared)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    page = Page(browser, demo.url)
    expected = "cannot read image corrupt.png"
    assert page.upload(corrupt).startswith(f"error: {expected}")
    page.all("#restore")[0].click()
    assert any(line.startswith(expected) for line in page.error_toast(expected))
    assert demo.process.poll() is None, "the server stopped after a corrupt upload"
    page.close_toasts()
    assert page.upload(lq_path).startswith("Input: ")
    assert not page.all("#download a[href]")
    restored = read_image(_download(page.restore(), tmp_path / "restored.png"))
    assert (restored.height, restored.width) == read_image(lq_path).rgb.shape[:2]


def test_an_untrained_setting_is_refused_with_the_clis_message(demo, browser, tmp_path):
    from selenium.webdriver.common.keys import Keys

    lq_path, _ = _example(demo.prepared)
    steps = "50"  # a schedule that does not start at the model's trained start step alone
    arguments = [str(lq_path), "-o", str(tmp_path / "out"), "--model", str(demo.model), "--task", TASK]
    completed = _unildiff("restore", *arguments, "--steps", steps, cwd=tmp_path)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    lines = [line for line in completed.stderr.splitlines() if line.startswith("error: ")]
    assert lines, completed.stderr
    message = lines[0].removeprefix("error: ")
    assert f"steps={steps}" in message, message
    page = Page(browser, demo.url)
    page.upload(lq_path)
    page.pick_task(TASK, _model_tasks(demo.model)[TASK])
    page.all("#advanced")[0].click()
    field = page.wait(
        lambda: [e for e in page.all("#steps input") if e.is_displayed()], 30, "the steps field"
    )
    field[0].send_keys(Keys.CONTROL, "a")
    field[0].send_keys(steps, Keys.TAB)
    page.all("#restore")[0].click()
    assert message in page.error_toast(message, REQUEST_S)  # the whole line, nothing added
    assert not page.all("#download a[href]")


def test_api_matches_unildiff_restore_and_queues_one_request_at_a_time(demo, tmp_path):
    import cv2
    from gradio_client import Client, handle_file
    from gradio_client.utils import Status

    lq_path, _ = _example(demo.prepared)
    # A photo-sized image (tiled by the recorded automatic tiling) keeps the first request busy while
    # the second one waits in the queue.
    large = tmp_path / "large.png"
    cv2.imwrite(str(large), np.tile(cv2.imread(str(lq_path)), (8, 8, 1)))
    client = Client(demo.url, verbose=False, download_files=str(tmp_path / "api"))
    first = client.submit(image=handle_file(str(large)), task=TASK, seed=3, api_name="/restore")
    deadline = time.monotonic() + REQUEST_S
    while first.status().code not in (Status.PROCESSING, Status.PROGRESS, Status.FINISHED):
        assert time.monotonic() < deadline, f"the first request never started: {first.status()}"
        time.sleep(0.05)
    second = client.submit(image=handle_file(str(lq_path)), task=TASK, seed=4, api_name="/restore")
    _, _, download, summary = first.result(timeout=REQUEST_S)
    second.result(timeout=REQUEST_S)
    assert "seed 3" in summary
    cli = _cli_restore(demo, large, tmp_path / "cli", "--seed", "3")
    api = read_image(download)
    assert api.rgb.shape == cli.rgb.shape and np.array_equal(api.rgb, cli.rgb), "API and CLI differ"

    def updates(job) -> list:
        queue, found = job.communicator.updates, []
        while not queue.empty():
            update = queue.get_nowait()
            if hasattr(update, "code"):
                found.append(update)
        return found

    statuses = {name: updates(job) for name, job in (("first", first), ("second", second))}

    def moments(name: str, code) -> list[float]:
        return [update.time.timestamp() for update in statuses[name] if update.code == code]

    # The times are the client's, so the order is judged on the progress messages: the second request
    # joined the queue before the first one's last graph call, and each of its own graph calls reports
    # after that (run at once, they would interleave).
    joined = [
        u.time.timestamp() for u in statuses["second"] if u.code == Status.IN_QUEUE and u.rank is not None
    ]
    first_progress, second_progress = moments("first", Status.PROGRESS), moments("second", Status.PROGRESS)
    assert joined and joined[0] < max(first_progress), "the second request never waited"
    assert max(first_progress) < min(second_progress), "two requests ran at once"
    progress = [
        u.progress_data[0] for u in statuses["first"] if u.code == Status.PROGRESS and u.progress_data
    ]
    assert len(progress) > 1 and progress[-1].index == progress[-1].length, "no progress over the graph calls"


def _listening_addresses(pid: int) -> list[str]:
    """``address:port`` of every listening TCP socket of process ``pid`` (Linux ``/proc``)."""
    inodes = set()
    for link in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(link)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            if width == 8:
                host = socket.inet_ntop(socket.AF_INET, raw[::-1])
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                host = socket.inet_ntop(socket.AF_INET6, words)
            found.append(f"{host}:{int(port, 16)}")
    return found


def test_api_sends_a_free_text_prompt_instead_of_the_tasks(demo, tmp_path):
    from gradio_client import Client, handle_file

    lq_path, _ = _example(demo.prepared)
    client = Client(demo.url, verbose=False, download_files=str(tmp_path / "api"))
    text = "remove the rain streaks from this photo"
    *_, summary = client.predict(
        image=handle_file(str(lq_path)), task=TASK, prompt_text=text, seed=5, api_name="/restore"
    )
    assert f'prompt "{text}"' in summary and "seed 5" in summary


def test_the_server_listens_on_loopback_only(demo):
    addresses = _listening_addresses(demo.process.pid)
    port = demo.url.rstrip("/").rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}" in addresses
    assert all(address.startswith("127.0.0.1:") for address in addresses), addresses
