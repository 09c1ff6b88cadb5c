"""The bundle's web page, served as it is on 127.0.0.1 and run by headless Chromium with onnxruntime-web (WASM)."""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import signal
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from fat_deploy.cli.export import main as fat_export
from fat_deploy.common.calibration import preprocess, sample_photos
from fat_deploy.common.verify import is_tie
from fat_deploy.models import create_model, get_spec
from fat_deploy.runtimes.onnx.web_page import ORT_WEB_FILES, ort_web_dist

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
PHOTOS = ("chelsea", "coffee", "astronaut")
pytestmark = pytest.mark.slow


def _require_browser() -> None:
    missing = [what for what, ok in (("a Chromium browser", CHROMIUM), ("onnxruntime-web (npm ci)", ort_web_dist()))
               if not ok]
    if missing:
        if os.environ.get("FAT_DEPLOY_EXPECT_BROWSER") == "1":  # make test installs both where it can
            pytest.fail(f"missing where make test sets them up: {', '.join(missing)}")
        pytest.skip(f"no browser test here: {', '.join(missing)} not present")


class Site(ThreadingHTTPServer):
    """The bundle's web/ folder as it is, sample photos under /photos/, and POST /report for the page's result."""

    def __init__(self, web: Path, photos: Path) -> None:
        self.web, self.photos, self.reports = web, photos, queue.Queue()  # type: ignore[var-annotated]
        site = self

        class Handler(SimpleHTTPRequestHandler):
            def translate_path(self, path: str) -> str:
                clean = path.split("?", 1)[0]
                if clean.startswith("/photos/"):
                    return str(site.photos / Path(clean).name)
                return str(site.web / clean.lstrip("/"))

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                site.reports.put(self.rfile.read(int(self.headers["Content-Length"])).decode())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    def run_page(self, query: str, folder: Path, timeout: float = 180.0) -> dict[str, Any]:
        """Open index.html?query in headless Chromium and wait for the page's report."""
        url = f"http://127.0.0.1:{self.server_address[1]}/index.html?{query}&report=/report"
        browser = subprocess.Popen([str(CHROMIUM), "--headless=new", "--no-sandbox", "--enable-unsafe-webgpu",
                                    "--no-first-run", f"--user-data-dir={folder}", url],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            report: dict[str, Any] = json.loads(self.reports.get(timeout=timeout))
        finally:  # the browser's renderer and GPU processes too: its whole process group
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait()
        return report


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, trained_looking_checkpoint: Path):  # type: ignore[no-untyped-def]
    _require_browser()
    root = tmp_path_factory.mktemp("web")
    assert fat_export(["--model", "fat_b0", "--format", "onnx", "--bundle", str(root / "bundle"),
                       "--checkpoint", str(trained_looking_checkpoint)]) == 0
    photos = root / "photos"
    photos.mkdir()
    for name, image in sample_photos():
        if name.removeprefix("skimage:") in PHOTOS:
            image.save(photos / f"{name.removeprefix('skimage:')}.jpg", quality=95)
    server = Site(root / "bundle" / "web", photos)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, root
    server.shutdown()


def test_the_bundle_page_ships_its_runtime_and_names_no_cdn(site) -> None:  # type: ignore[no-untyped-def]
    server, _ = site
    files = {p.name for p in server.web.iterdir()}
    assert {"index.html", "classify.mjs", "models.json", *ORT_WEB_FILES} <= files
    page = (server.web / "classify.mjs").read_text() + (server.web / "index.html").read_text()
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere


@pytest.mark.parametrize("photo", PHOTOS)
def test_the_page_classifies_like_pytorch(site, trained_looking_checkpoint: Path, photo: str,  # type: ignore[no-untyped-def]
                                          tmp_path: Path) -> None:
    server, _ = site
    report = server.run_page(f"image=/photos/{photo}.jpg&runs=5", tmp_path / "profile")
    assert "error" not in report, report
    assert report["ep"] == "wasm" and report["loadMs"] > 0 and report["firstMs"] > 0 and report["steadyMs"] > 0
    page_input = np.frombuffer(base64.b64decode(report["input"]), dtype=np.float32).reshape(1, 3, 224, 224)
    model = create_model("fat_b0", checkpoint=trained_looking_checkpoint)
    with torch.no_grad():
        reference = model(torch.from_numpy(page_input.copy())).numpy()[0]
    logits = np.array(report["logits"], dtype=np.float32)
    error = float(np.abs(logits - reference).max())
    assert error / float(np.abs(reference).max()) < 1e-4  # onnxruntime-web (WASM, fp32) = PyTorch on the same input
    expected = np.argsort(-reference)[:5]
    shown = [entry["index"] for entry in report["top5"]]
    for rank, (got, want) in enumerate(zip(shown, expected)):
        assert got == want or is_tie(float(reference[got]), float(reference[want]), error), (rank, shown, expected)
    # The browser's canvas resampling against the documented bicubic preprocessing of the same file: measured.
    ours = preprocess(Image.open(server.photos / f"{photo}.jpg").convert("RGB"), get_spec("fat_b0"), (224, 224))
    resampling = float(np.abs(ours - page_input[0]).mean())
    assert resampling < 0.1, f"the page's crop departs from the input contract (mean abs {resampling:.3f})"


def page_against_pytorch(report: dict[str, Any], checkpoint: Path) -> float:
    """Max relative difference of the page's logits from PyTorch's on the page's own input tensor."""
    page_input = np.frombuffer(base64.b64decode(report["input"]), dtype=np.float32).reshape(1, 3, 224, 224)
    with torch.no_grad():
        reference = create_model("fat_b0", checkpoint=checkpoint)(torch.from_numpy(page_input.copy())).numpy()[0]
    return float(np.abs(np.array(report["logits"]) - reference).max() / np.abs(reference).max())


def test_webgpu_is_used_where_the_browser_offers_it(site, trained_looking_checkpoint: Path,  # type: ignore[no-untyped-def]
                                                    tmp_path: Path) -> None:
    server, _ = site
    report = server.run_page("image=/photos/chelsea.jpg&ep=webgpu", tmp_path / "profile")
    assert "error" not in report, report
    assert report["ep"] == ("webgpu" if report["webgpuAdapter"] else "wasm")  # said, never silently swapped
    if report["ep"] == "webgpu":  # here: Chromium's software adapter (no GPU on this machine), fp32 shaders
        assert page_against_pytorch(report, trained_looking_checkpoint) < 1e-3
