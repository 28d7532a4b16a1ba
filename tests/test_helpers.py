"""The float64 oracle itself (tests/helpers.py): a check every correctness test relies on
must fail on a wrong answer, the non-finite ones included."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import assert_close

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize("actual, expected", [
    ([5.0], [INF]),  # a finite value where torch's is infinite
    ([-INF], [INF]),  # an infinity of the other sign
    ([INF], [3.0]),
    ([1.0], [NAN]),
    ([NAN], [1.0]),
    ([1.5], [1.0]),
])
def test_assert_close_fails_on_a_wrong_answer(actual, expected):
    with pytest.raises(AssertionError):
        assert_close(torch.tensor(actual, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64))


def test_assert_close_passes_torchs_own_answer():
    e = torch.tensor([INF, -INF, NAN, 1.0, 0.0], dtype=torch.float64)
    assert_close(e.clone(), e)
    assert_close(e.float(), e)
