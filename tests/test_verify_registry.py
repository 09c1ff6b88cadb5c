"""Every named precision has a tolerance, and every format only lists known precisions."""

from fat_deploy.exporters.registry import PRECISIONS, QUANTIZED, list_formats, get_format
from fat_deploy.exporters.verify import TOLERANCES


def test_every_precision_has_a_tolerance() -> None:
    assert set(TOLERANCES) == set(PRECISIONS)
    assert QUANTIZED < set(PRECISIONS)


def test_formats_list_known_precisions_only() -> None:
    for name in list_formats():
        assert set(get_format(name).precisions) <= set(PRECISIONS), name


def test_option_kind_reads_string_and_real_annotations() -> None:
    import dataclasses

    from fat_deploy.exporters.options import option_kind
    from fat_deploy.runtimes.base import option

    real = dataclasses.make_dataclass("Real", [
        ("switch", bool, option("--switch", "", default=False)),
        ("patterns", list[str] | None, option("--patterns", "")),
        ("count", int | None, option("--count", "")),
        ("name", str | None, option("--name", "")),
    ])
    kinds = [option_kind(f) for f in dataclasses.fields(real)]
    assert kinds == ["switch", "list", "int", "str"]
