import pytest

from resnet_deploy.errors import UsageError
from resnet_deploy.shapes import ShapeRange, make_range, parse_shape, parse_size


def test_parse_shape_forms():
    assert parse_shape("1x3x224x224") == (1, 3, 224, 224)
    assert parse_shape("320x256") == (1, 3, 320, 256)
    assert parse_shape("224") == (1, 3, 224, 224)
    assert parse_size("320x256") == (320, 256)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1x4x224x224", "3 channels"),
        ("0x3x224x224", "positive"),
        ("1x3x-5x224", "positive"),
        ("abc", "NxCxHxW"),
        ("1x3x2x2x2", "5 dimensions"),
        ("224x", "invalid shape '224x'"),  # a typo, not a square
        ("8x3x224x224x", "invalid shape"),
        ("1xx3x224", "invalid shape"),
    ],
)
def test_bad_shapes_are_clear(text, fragment):
    with pytest.raises(UsageError, match=fragment):
        parse_shape(text)


@pytest.mark.parametrize("text", ["10x", "x10", "", "10x10x10"])
def test_bad_sizes_are_clear(text):
    with pytest.raises(UsageError, match="invalid size"):
        parse_size(text)


def test_range_must_be_ordered():
    with pytest.raises(UsageError, match="min <= opt <= max"):
        ShapeRange((1, 3, 300, 300), (1, 3, 224, 224), (8, 3, 448, 448))


def test_static_range_needs_dynamic_for_bounds():
    with pytest.raises(UsageError, match="--dynamic"):
        make_range(False, 224, "1x3x64x64", None, None)


def test_range_check_messages():
    rng = ShapeRange((1, 3, 64, 64), (1, 3, 224, 224), (4, 3, 256, 256))
    rng.check((2, 3, 97, 131))
    with pytest.raises(UsageError, match="outside"):
        rng.check((8, 3, 224, 224))
    with pytest.raises(UsageError, match="only accepts 1x3x224x224"):
        ShapeRange.static((1, 3, 224, 224)).check((1, 3, 320, 256))


def test_verification_shapes_include_odd_size():
    shapes = make_range(True, 224).verification_shapes()
    assert (1, 3, 64, 64) in shapes and (1, 3, 224, 224) in shapes and (8, 3, 448, 448) in shapes
    assert any(s[2] != s[3] and s[2] % 2 == 1 for s in shapes)


def test_a_small_range_still_verifies_an_odd_non_square_size():
    """64..96 px: 97x131 is clamped to 96x96, square; one side moves inside the range so H/W stay told apart."""
    shapes = ShapeRange((1, 3, 64, 64), (1, 3, 64, 64), (2, 3, 96, 96)).verification_shapes()
    odd = [s for s in shapes if s[2] != s[3]]
    assert odd and all(ShapeRange((1, 3, 64, 64), (1, 3, 64, 64), (2, 3, 96, 96)).contains(s) for s in odd)
