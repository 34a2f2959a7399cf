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


def test_both_parse_rules_in_records_metrics_and_tables():
    rows = [{"id": str(k), "benchmark": "D1", "category": "descriptive", "condition": c, "gold": g}
            for k, (c, g) in enumerate([("DIFF", "YES"), ("EQUAL", "NO"), ("EQUAL", "NO"), ("DIFF", "YES")])]
    texts = ["Why.\nConclusion: YES", "Conclusion: No, they are equal.", "Why.\nConclusion: YES/NO", "Unsure."]
    recs = E.to_predictions(rows, texts, [5] * 4, "m0")
    assert [r["prediction"] for r in recs] == ["YES", None, None, None]
    assert [r["prediction_first_match"] for r in recs] == ["YES", "NO", "YES", None]
    df = pd.DataFrame(recs)
    m = E.decision_metrics(df)
    assert m["parse_rate"] == 0.25 and m["parse_rate_first_match"] == 0.75
    assert m["acc_overall"] == 0.25 and m["acc_overall_first_match"] == 0.5
    assert m["acc_equal"] == 0.0 and m["acc_equal_first_match"] == 0.5
    # a frame without the first-match columns is re-parsed from its raw text, with the same result
    old = df.drop(columns=["prediction_first_match", "parsed_first_match"])
    assert E.decision_metrics(old)["parse_rate_first_match"] == 0.75
    assert math.isnan(E.decision_metrics(DF)["parse_rate_first_match"])     # no raw text: no first-match view
    # the paper's value stands beside both rules' rows
    t = E.compare_models({"m0": m}, {"m0": {"parse_rate": 0.73}}, "llama").set_index("metric")
    assert t.loc["Parse rate", "m0"] == 0.25 and t.loc["Parse rate [first-match rule, as the paper]", "m0"] == 0.75
    assert t.loc["Parse rate [first-match rule, as the paper]", "paper m0 (llama)"] == "0.730"
    assert E.per_benchmark(df).set_index("benchmark").loc["D1", "parse_rate_first_match"] == 0.75
