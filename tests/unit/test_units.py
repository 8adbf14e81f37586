import pytest

from shared.errors import ConfigError
from shared.units import GiB, KiB, MiB, format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("4096", 4096), ("64K", 64 * KiB), ("512MiB", 512 * MiB), ("2G", 2 * GiB), ("1 gb", GiB)],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "1.5G", "3X"])
def test_parse_size_rejects_bad_input_with_a_hint(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a size"):
        parse_size(text)


def test_format_size() -> None:
    assert format_size(512) == "512 B"
    assert format_size(3 * MiB) == "3.0 MiB"
