"""The scoring stage's reasons for a result that does not fit its schema."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas import Prediction
from worker.scoring import unfit

SECRET = "hunter2-from-the-article"


def test_a_result_that_does_not_fit_its_schema_is_described_without_its_values() -> None:
    with pytest.raises(ValidationError) as raised:
        Prediction.model_validate(
            {"article_id": SECRET + "\x00", "labels": [{"name": SECRET, "score": 7}]}
        )
    reason = unfit(raised.value)
    assert reason.startswith("the result does not fit its schema: article_id: String should")
    assert "labels.0.score: Input should be less than or equal to 1" in reason
    assert SECRET not in reason


def test_any_other_failure_is_named_by_its_type_only() -> None:
    assert unfit(KeyError(SECRET)) == "KeyError"
