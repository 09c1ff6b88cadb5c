"""Every registered runtime (the tests' fake one included) keeps the contract the pipeline relies on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fake_runtime import FAKE_RUNTIME

from fat_deploy import registry
from fat_deploy.common.verify import TOLERANCES
from fat_deploy.contract.formats import ExportFormat, QuantizationOptions
from fat_deploy.contract.runtime import Runtime
from fat_deploy.exporters.bundle import PLATFORM_TITLES
from fat_deploy.precision import PRECISIONS

EVERY_RUNTIME = [*registry.REGISTERED, FAKE_RUNTIME]
WITH_FORMAT = [r for r in EVERY_RUNTIME if r.export_format is not None]


def runtime_id(runtime: Runtime) -> str:
    return runtime.backend.name


@pytest.mark.parametrize("runtime", EVERY_RUNTIME, ids=runtime_id)
def test_backend_declares_what_it_runs(runtime: Runtime) -> None:
    backend = runtime.backend
    assert backend.name and backend.package and backend.devices
    assert backend.artifact_format == (runtime.export_format.name if runtime.export_format else None)
    assert runtime.packages, "every runtime records the versions of what produced and ran its files"


@pytest.mark.parametrize("runtime", WITH_FORMAT, ids=runtime_id)
def test_format_and_backend_agree(runtime: Runtime) -> None:
    fmt = runtime.export_format
    assert fmt is not None and fmt.backend is runtime.backend
    assert fmt.suffix.startswith(".") and fmt.extra and fmt.converter_modules and fmt.runtime


@pytest.mark.parametrize("runtime", WITH_FORMAT, ids=runtime_id)
def test_every_precision_is_known_and_has_a_tolerance(runtime: Runtime) -> None:
    fmt = runtime.export_format
    assert fmt is not None and fmt.precisions
    for precision in fmt.precisions:
        assert precision in PRECISIONS and precision in TOLERANCES


@pytest.mark.parametrize("runtime", WITH_FORMAT, ids=runtime_id)
def test_every_option_has_a_flag_and_help(runtime: Runtime) -> None:
    fmt = runtime.export_format
    assert fmt is not None and dataclasses.is_dataclass(fmt.Options)
    for field in [*dataclasses.fields(fmt.Options), *dataclasses.fields(QuantizationOptions)]:
        flag, text = field.metadata.get("flag"), field.metadata.get("help")
        assert isinstance(flag, str) and flag.startswith("--") and flag == flag.lower(), field.name
        assert isinstance(text, str) and len(text) > 10, field.name
    for option in fmt.artifact_tags:
        assert option in fmt.supported_options
    for option in fmt.bundle_options:
        assert option in fmt.supported_options


@pytest.mark.parametrize("runtime", WITH_FORMAT, ids=runtime_id)
def test_every_bundle_platform_has_a_title_and_a_guide(runtime: Runtime) -> None:
    fmt = runtime.export_format
    assert fmt is not None
    if fmt.bundle_platform is None:
        return
    assert fmt.bundle_platform in PLATFORM_TITLES
    assert type(fmt).integration_guide is not ExportFormat.integration_guide, "a guide of its own"


def test_names_are_unique_and_flags_do_not_collide() -> None:
    backends = [r.backend.name for r in EVERY_RUNTIME]
    formats = [r.export_format.name for r in WITH_FORMAT if r.export_format]
    assert len(set(backends)) == len(backends) and len(set(formats)) == len(formats)
    flags: dict[str, str] = {}
    for runtime in WITH_FORMAT:
        assert runtime.export_format is not None
        for field in dataclasses.fields(runtime.export_format.Options):
            flag = str(field.metadata["flag"])
            assert flags.setdefault(flag, field.name) == field.name, f"{flag} means two options"


def name_rows() -> list[str]:
    rows = []
    for runtime in registry.REGISTERED:
        fmt, backend = runtime.export_format, runtime.backend
        package = type(backend).__module__.split(".")[2]
        cells = [f"`{package}`", f"`{fmt.name}`" if fmt else "-", f"`{fmt.suffix}`" if fmt else "-",
                 f"`{backend.name}`", f"`{fmt.extra}`" if fmt else "-", ", ".join(runtime.packages) or "-"]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def test_the_design_doc_names_every_runtime_as_the_registry_does() -> None:
    design = (Path(__file__).parents[1] / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    table = [line for line in design.splitlines() if line.startswith("| `") and line.count("|") == 7]
    assert table == name_rows()


@pytest.mark.parametrize("runtime", WITH_FORMAT, ids=runtime_id)
def test_a_runtime_declares_one_extra(runtime: Runtime) -> None:
    assert runtime.export_format is not None
    assert runtime.backend.extra in ("", runtime.export_format.extra)


def test_too_few_calibration_images_are_cautioned_in_every_manifest() -> None:
    from fat_deploy.contract.formats import Calibration, Conversion

    few = Conversion(calibration=Calibration(method="minmax", samples=32, images=["a.png", "b.png"]))
    assert few.manifest_details()["warning"] == "only 2 distinct calibration images; 4+ recommended"
    enough = Conversion(calibration=Calibration(method="minmax", samples=32, images=list("abcd")))
    assert "warning" not in enough.manifest_details()
