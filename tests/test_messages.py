import pytest

from utils.messages import counted


@pytest.mark.parametrize("number, noun, text", [
    (1, "epoch", "1 epoch"),
    (5, "epoch", "5 epochs"),  # was "5 epoches": the -ch rule read epoch like batch
    (2, "batch", "2 batches"),
    (3, "class", "3 classes"),
    (2, "process", "2 processes"),
    (0, "image", "0 images"),
    (2, "drawn copy", "2 drawn copies"),
])
def test_counted_writes_the_plural_a_reader_expects(number, noun, text):
    assert counted(number, noun) == text
