"""Every named precision has a tolerance, and every format only lists known precisions."""

from fat_deploy.common.verify import TOLERANCES
from fat_deploy.contract.formats import PRECISIONS, QUANTIZED
from fat_deploy.registry import get_format, list_formats


def test_every_precision_has_a_tolerance() -> None:
    assert set(TOLERANCES) == set(PRECISIONS)
    assert QUANTIZED < set(PRECISIONS)


def test_formats_list_known_precisions_only() -> None:
    for name in list_formats():
        assert set(get_format(name).precisions) <= set(PRECISIONS), name


def test_option_kind_reads_string_and_real_annotations() -> None:
    import dataclasses

    from fat_deploy.contract.formats import option
    from fat_deploy.exporters.options import option_kind

    real = dataclasses.make_dataclass("Real", [
        ("switch", bool, option("--switch", "", default=False)),
        ("patterns", list[str] | None, option("--patterns", "")),
        ("count", int | None, option("--count", "")),
        ("name", str | None, option("--name", "")),
    ])
    kinds = [option_kind(f) for f in dataclasses.fields(real)]
    assert kinds == ["switch", "list", "int", "str"]
