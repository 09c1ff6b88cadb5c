"""The runtimes fat-deploy drives send no usage telemetry and leave nothing in the home folder (fat_deploy.telemetry,
fat_deploy.runtimes.openvino.standalone.openvino_module)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Variables by which onnxruntime or openvino-telemetry recognise a CI machine and stay quiet on their own.
CI_MARKERS = ("CI", "TF_BUILD", "JENKINS_URL", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "BUILDKITE", "TRAVIS",
              "ORT_DISABLE_TELEMETRY")


@pytest.mark.slow
def test_exports_send_no_telemetry_and_write_nothing_in_the_home_folder(tmp_path: Path) -> None:
    # Without fat-deploy's opt-outs, on a user's machine: onnxruntime writes a device id and an event cache under
    # ~/.cache/Microsoft and uploads events; openvino.convert_model writes ~/intel/openvino_ga_cid and ~/intel/stats
    # and sends events to Google Analytics. A fresh process, so nothing has imported either yet.
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir()
    environment = {key: value for key, value in os.environ.items() if key not in CI_MARKERS}
    environment.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    script = ("import os, sys; from fat_deploy.exporters import export\n"
              "for fmt in ('onnx', 'openvino'):\n"
              "    artifact = export('fat_b0', fmt, out=sys.argv[1], img_size=64)\n"
              "    assert artifact.status == 'passed', artifact.error\n"
              "print(os.environ.get('ORT_DISABLE_TELEMETRY'), sys.modules.get('openvino_telemetry', 0) is None)\n")
    run = subprocess.run([sys.executable, "-c", script, str(out)], env=environment, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert sorted(str(path.relative_to(home)) for path in home.rglob("*")) == []
    assert run.stdout.split() == ["1", "True"]  # onnxruntime told to stay quiet; OpenVINO's tools on their stubs


def test_a_users_own_telemetry_setting_is_kept() -> None:
    script = "import os, fat_deploy; print(os.environ['ORT_DISABLE_TELEMETRY'])"
    run = subprocess.run([sys.executable, "-c", script], env={**os.environ, "ORT_DISABLE_TELEMETRY": "0"},
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.split() == ["0"], run.stderr[-2000:]
