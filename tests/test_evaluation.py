import math

import pandas as pd
import pytest

from dart_utils.dart import evaluation as E


def frame(rows):
    return pd.DataFrame(rows, columns=["id", "benchmark", "category", "condition", "gold", "prediction", "parsed"])


DF = frame([
    ("1", "D1", "descriptive", "DIFF", "YES", "YES", True),
    ("2", "D1", "descriptive", "EQUAL", "NO", "YES", True),
    ("3", "N1", "normative", "DIFF", "YES", None, False),
    ("4", "N1", "normative", "EQUAL", "NO", "NO", True),
])


def test_decision_metrics_conventions():
    m = E.decision_metrics(DF)
    assert m["acc_overall"] == 0.5              # unparsed counts as wrong
    assert m["acc_parsed_only"] == pytest.approx(2 / 3)
    assert m["acc_diff"] == 0.5 and m["acc_equal"] == 0.5
    assert m["acc_descriptive"] == 0.5 and m["acc_normative"] == 1.0   # parsed-only: item 3 excluded
    assert m["parse_rate"] == 0.75 and m["pred_yes_rate"] == 0.5
    # YES: tp 1, fp 1, fn 1 -> F1 .5 ; NO: tp 1, fp 0, fn 1 -> F1 2/3
    assert m["f1_overall"] == pytest.approx((0.5 + 2 / 3) / 2)


def test_empty_groups_are_nan():
    m = E.decision_metrics(DF[DF.category == "descriptive"])
    assert math.isnan(m["acc_normative"])


def test_per_benchmark_and_comparison():
    pb = E.per_benchmark(DF).set_index("benchmark")
    assert pb.loc["N1", "acc_parsed_only"] == 1.0 and pb.loc["N1", "parse_rate"] == 0.5
    table = E.compare_models({"m0": E.decision_metrics(DF)}, {"m0": {"acc_overall": 0.39}}, "llama")
    row = table.set_index("metric").loc["Accuracy, overall (unparsed = wrong)"]
    assert row["m0"] == 0.5 and row["paper m0 (llama)"] == "0.390"
    assert table.set_index("metric").loc["Parse rate", "paper m0 (llama)"] == "—"


def test_to_predictions_parses_each_output():
    rows = [{"id": "1", "benchmark": "D1", "category": "descriptive", "condition": "DIFF", "gold": "YES"}] * 2
    preds = E.to_predictions(rows, ["Differs.\nConclusion: YES", "I cannot help with that."], [5, 7], "m0")
    assert preds[0]["prediction"] == "YES" and preds[0]["parsed"] and preds[0]["rationale"] == "Differs."
    assert preds[1]["prediction"] is None and preds[1]["failure"] == "refusal" and preds[1]["new_tokens"] == 7
    with pytest.raises(ValueError):
        E.to_predictions(rows, ["only one"], [1], "m0")
