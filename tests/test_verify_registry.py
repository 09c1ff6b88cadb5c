"""Every named precision has a tolerance, and every format only lists known precisions."""

from fat_deploy.exporters.registry import PRECISIONS, QUANTIZED, list_formats, get_format
from fat_deploy.exporters.verify import TOLERANCES


def test_every_precision_has_a_tolerance() -> None:
    assert set(TOLERANCES) == set(PRECISIONS)
    assert QUANTIZED < set(PRECISIONS)


def test_formats_list_known_precisions_only() -> None:
    for name in list_formats():
        assert set(get_format(name).precisions) <= set(PRECISIONS), name
