"""--bundle's web page: ``index.html`` and ``classify.mjs`` (in ``web/`` beside this module) with onnxruntime-web's
files copied beside them, so that the folder works as it is when served (no CDN).

onnxruntime-web comes from npm (``package.json`` pins it; ``make setup`` runs ``npm ci``): its ``dist/`` folder is
found through ``$FAT_DEPLOY_ORT_WEB_DIST`` or in the checkout's ``node_modules``. Where it is missing the page is
still written, and the folder's README and a warning say which files to add.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger("fat_deploy")

PAGE = Path(__file__).with_name("web")
PAGE_FILES = ("index.html", "classify.mjs")
MODELS_FILE = "models.json"
ORT_WEB_VERSION = "1.30.0"  # as package.json pins it
# ort.min.mjs runs WebAssembly and WebGPU through the JSEP build of the WebAssembly module.
ORT_WEB_FILES = ("ort.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm")


def ort_web_dist() -> Path | None:
    """onnxruntime-web's ``dist/`` folder at the pinned version, or None."""
    given = os.environ.get("FAT_DEPLOY_ORT_WEB_DIST")
    dist = Path(given) if given else Path(__file__).resolve().parents[3] / "node_modules" / "onnxruntime-web" / "dist"
    try:
        version = json.loads((dist.parent / "package.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError):
        return None
    if version != ORT_WEB_VERSION or not all((dist / name).is_file() for name in ORT_WEB_FILES):
        return None
    return dist


def write_web_page(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """The page, ``models.json`` (every .onnx of the folder and its manifest) and onnxruntime-web's files; their
    names."""
    for name in PAGE_FILES:
        shutil.copyfile(PAGE / name, folder / name)
    listing = folder / MODELS_FILE
    models = json.loads(listing.read_text(encoding="utf-8")) if listing.exists() else []
    stem = manifest["file"]["name"].rsplit(".", 1)[0]
    models.append({"file": manifest["file"]["name"], "manifest": f"{stem}.json", "precision": manifest["precision"]})
    listing.write_text(json.dumps(models, indent=2) + "\n", encoding="utf-8")
    dist = ort_web_dist()
    if dist is None:
        log.warning("onnxruntime-web %s not found (npm ci in the checkout, or FAT_DEPLOY_ORT_WEB_DIST): the web page "
                    "needs %s beside it", ORT_WEB_VERSION, ", ".join(ORT_WEB_FILES))
        return [*PAGE_FILES, MODELS_FILE]
    for name in ORT_WEB_FILES:
        shutil.copyfile(dist / name, folder / name)
    return [*PAGE_FILES, MODELS_FILE, *ORT_WEB_FILES]


def page_section() -> str:
    """The web README's words on the page."""
    found = ort_web_dist() is not None
    files = ", ".join(f"`{name}`" for name in ORT_WEB_FILES)
    where = (f"onnxruntime-web {ORT_WEB_VERSION}'s {files} are copied beside it" if found else
             f"**onnxruntime-web was not found when this bundle was made**: copy {files} from "
             f"`npm install onnxruntime-web@{ORT_WEB_VERSION}` (`node_modules/onnxruntime-web/dist/`) beside it")
    return f"""## index.html: a page that works as it is

Serve this folder (`python3 -m http.server` in it) and open `index.html`: it loads the model with onnxruntime-web
(WebAssembly, one thread; `?ep=webgpu` for WebGPU where the browser has it), preprocesses a picked photo as the
manifest says (a canvas crop and resize: the browser's resampling, not bicubic) and shows the top 5; `?model=` picks
another `.onnx` listed in `{MODELS_FILE}`. {where}. fat-deploy's test suite serves a bundle like this one on
127.0.0.1 and runs the page in headless Chromium on sample photos, checking its top 5 against PyTorch on the page's
own input tensor."""
