"""The promotion gate weighs micro- and macro-F1 on the holdout alike."""

from trainer.service import passes_gate


def test_a_candidate_better_on_micro_but_worse_on_macro_is_not_promoted() -> None:
    assert not passes_gate((0.90, 0.40), (0.88, 0.50), margin=0.005)


def test_a_candidate_within_the_margin_on_both_measures_is_promoted() -> None:
    assert passes_gate((0.876, 0.496), (0.88, 0.50), margin=0.005)
    assert not passes_gate((0.87, 0.50), (0.88, 0.50), margin=0.005)


def test_with_no_production_model_the_candidate_is_promoted() -> None:
    assert passes_gate((0.1, 0.0), None, margin=0.0)
