"""medflow.evaluate: each statistic checked against an independent computation.

References used: a plain O(m·n) DeLong written here from the definition, scikit-learn's weighted
metrics, scipy.stats.bootstrap, the closed-form Wilson interval, hand-computed decision-curve and
RSNA-PE numbers.
"""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from medflow.evaluate import (
    DegenerateThresholdWarning,
    bootstrap_auc_ci,
    bootstrap_cis,
    bootstrap_metric_ci,
    brier,
    calibration_intercept_slope,
    classification_metrics,
    compare_heads,
    confusion,
    delong,
    delong_ci,
    delong_paired,
    evaluate_predictions,
    net_benefit,
    paired_bootstrap_delta_auc,
    reliability_curve,
    rsna_pe_weighted_log_loss,
    wilson_ci,
    write_metrics,
    youden_threshold,
)
from medflow.evaluate.bootstrap import PatientBootstrap, group_codes
from medflow.evaluate.pe import EXAM_WEIGHTS, IMAGE_WEIGHT
from medflow.evaluate.registry import list_metrics, register_metric

Z95 = stats.norm.ppf(0.975)


# --------------------------------------------------------------------------- reference DeLong
def _psi(x: float, y: float) -> float:
    return 1.0 if x > y else 0.5 if x == y else 0.0


def brute_delong(y, scores):
    """DeLong et al. (1988) straight from the definition: structural components by double loop."""
    y = np.asarray(y)
    pos_idx = [i for i in range(len(y)) if y[i] == 1]
    neg_idx = [j for j in range(len(y)) if y[j] == 0]
    m, n = len(pos_idx), len(neg_idx)
    v10, v01 = [], []
    for s in scores:
        v10.append([sum(_psi(s[i], s[j]) for j in neg_idx) / n for i in pos_idx])
        v01.append([sum(_psi(s[i], s[j]) for i in pos_idx) / m for j in neg_idx])
    v10, v01 = np.array(v10), np.array(v01)
    aucs = v10.mean(axis=1)
    k = len(scores)
    s10 = np.array(
        [[np.sum((v10[a] - aucs[a]) * (v10[b] - aucs[b])) / (m - 1) for b in range(k)] for a in range(k)]
    )
    s01 = np.array(
        [[np.sum((v01[a] - aucs[a]) * (v01[b] - aucs[b])) / (n - 1) for b in range(k)] for a in range(k)]
    )
    return aucs, s10 / m + s01 / n


def _tied_data(seed: int, n: int = 80, levels: int = 4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    a = np.clip(np.round(y * 1.2 + rng.normal(0, 1, n)), -levels, levels)  # few distinct values: heavy ties
    b = np.round(0.5 * a + rng.normal(0, 1, n), 1)
    return y, a, b


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_delong_matches_brute_force_with_heavy_ties(seed):
    y, a, b = _tied_data(seed)
    assert len(np.unique(a)) <= 9  # many ties
    aucs, cov = brute_delong(y, [a, b])
    auc, var = delong(y, a)
    assert auc == pytest.approx(aucs[0], abs=1e-12)
    assert auc == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert var == pytest.approx(cov[0, 0], rel=1e-10)

    ci = delong_ci(y, a, level=0.95)
    half = Z95 * math.sqrt(cov[0, 0])
    assert ci["ci"] == pytest.approx([max(0, aucs[0] - half), min(1, aucs[0] + half)], abs=1e-10)

    paired = delong_paired(y, a, b)
    var_diff = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    z = (aucs[0] - aucs[1]) / math.sqrt(var_diff)
    assert paired["auc_a"] == pytest.approx(aucs[0], abs=1e-12)
    assert paired["auc_b"] == pytest.approx(aucs[1], abs=1e-12)
    assert paired["z"] == pytest.approx(z, rel=1e-9)
    assert paired["p_value"] == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)


def test_delong_continuous_scores_and_edge_cases():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 60)
    p = rng.normal(size=60) + y
    aucs, cov = brute_delong(y, [p])
    auc, var = delong(y, p)
    assert (auc, var) == pytest.approx((aucs[0], cov[0, 0]), rel=1e-10)
    # perfect separation: zero variance, interval collapses, clipped to [0, 1]
    d = delong_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert d["auc"] == 1.0 and d["ci"] == [1.0, 1.0]
    # identical curves: no difference, p = 1
    same = delong_paired(y, p, p)
    assert same["diff"] == 0 and same["p_value"] == 1.0
    with pytest.raises(ValueError, match="both classes"):
        delong([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        delong([1, np.nan, 0], [0.1, 0.2, 0.3])


# --------------------------------------------------------------------------- bootstrap
def _clustered(n_patients: int, seed: int, rows=(1, 4)):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(rows[0], rows[1], n_patients)
    patient = np.repeat(np.arange(n_patients), sizes)
    risk = rng.normal(size=n_patients)
    y = (rng.random(patient.size) < 1 / (1 + np.exp(-2 * risk[patient]))).astype(int)
    p = 1 / (1 + np.exp(-(risk[patient] + rng.normal(0, 0.7, patient.size))))
    return y, p, np.array([f"P{i:04d}" for i in patient])


def test_resamples_are_whole_patients():
    y, p, groups = _clustered(40, 0)
    codes, n_groups = group_codes(groups)
    counts = PatientBootstrap(codes, n_groups, n_boot=50, seed=3, y=y.astype(np.int8)).matrix()
    assert counts.shape == (50, 40)
    assert (counts.sum(axis=1) == 40).all()  # G patient draws per resample

    seen = []

    def spy(yy, pp, w):
        for g in np.unique(groups):  # every row of a patient carries that patient's count
            assert len(set(w[groups == g])) == 1
        seen.append(w.sum())
        return float(roc_auc_score(yy, pp, sample_weight=w))

    bootstrap_metric_ci(y, p, groups, metric=spy, n_boot=20, seed=1)
    assert seen[0] == len(y)  # the point estimate: every row once
    assert len(seen) == 21 and len(set(seen[1:])) > 1  # resample sizes vary: patients have 1–3 rows


def test_duplicated_rows_do_not_shrink_patient_interval():
    y, p, groups = _clustered(150, 1)
    base = bootstrap_auc_ci(y, p, groups, n_boot=400, seed=7)
    k = 4  # every patient's rows copied k times: no new information
    dup = bootstrap_auc_ci(np.tile(y, k), np.tile(p, k), np.tile(groups, k), n_boot=400, seed=7)
    assert dup["ci"] == pytest.approx(base["ci"], abs=1e-12)
    rows = bootstrap_auc_ci(np.tile(y, k), np.tile(p, k), None, n_boot=400, seed=7)  # a row bootstrap
    width = base["ci"][1] - base["ci"][0]
    assert rows["ci"][1] - rows["ci"][0] < 0.7 * width  # ≈ 1/√k narrower: what must not happen


def test_unclustered_bootstrap_matches_scipy():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 300)
    p = rng.normal(size=300) + 0.8 * y
    ours = bootstrap_cis(y, p, None, n_boot=3000, seed=2)
    for name, fn in (("auroc", roc_auc_score), ("auprc", average_precision_score)):
        ref = stats.bootstrap(
            (y, p),
            fn,
            paired=True,
            vectorized=False,
            n_resamples=1500,
            method="percentile",
            random_state=np.random.default_rng(4),
        )
        assert ours[name]["value"] == pytest.approx(fn(y, p), abs=1e-12)
        assert ours[name]["ci"] == pytest.approx(
            [ref.confidence_interval.low, ref.confidence_interval.high], abs=0.012
        )
        assert ours[name]["se"] == pytest.approx(ref.standard_error, rel=0.1)


def test_fast_metrics_equal_sklearn_weighted_on_same_resamples():
    y, p, groups = _clustered(60, 2)
    p = np.round(p, 1)  # ties
    for name, fn in (("auroc", roc_auc_score), ("auprc", average_precision_score)):
        fast = bootstrap_metric_ci(y, p, groups, metric=name, n_boot=64, seed=9)

        def slow(yy, pp, w, fn=fn):
            return float(fn(yy, pp, sample_weight=w))

        ref = bootstrap_metric_ci(y, p, groups, metric=slow, n_boot=64, seed=9)
        assert fast["value"] == pytest.approx(ref["value"], abs=1e-12)
        assert fast["ci"] == pytest.approx(ref["ci"], abs=1e-12)
        assert fast["se"] == pytest.approx(ref["se"], abs=1e-12)


def test_bootstrap_seeded_and_redraws_single_class_resamples():
    y, p, groups = _clustered(80, 3)
    a = bootstrap_auc_ci(y, p, groups, n_boot=300, seed=5)
    assert a == bootstrap_auc_ci(y, p, groups, n_boot=300, seed=5)
    assert a["ci"] != bootstrap_auc_ci(y, p, groups, n_boot=300, seed=6)["ci"]
    # one positive patient among five: a third of the resamples miss it and are redrawn
    small = bootstrap_auc_ci([1, 0, 0, 0, 0, 0], [0.9, 0.1, 0.2, 0.3, 0.4, 0.95], list("ABCDEE"), n_boot=200)
    assert small["n_redrawn"] > 20 and small["n_boot"] == 200 and small["n_dropped"] == 0


def test_paired_bootstrap_delta():
    y, p, groups = _clustered(200, 4)
    rng = np.random.default_rng(0)
    worse = p + rng.normal(0, 0.6, p.size)
    res = paired_bootstrap_delta_auc(y, p, worse, groups, n_boot=500, seed=1)
    assert res["value"] == pytest.approx(roc_auc_score(y, p) - roc_auc_score(y, worse), abs=1e-12)
    assert res["ci"][0] > 0 and res["p_value"] < 0.01
    same = paired_bootstrap_delta_auc(y, p, p, groups, n_boot=200)
    assert same["value"] == 0 and same["ci"] == [0.0, 0.0] and same["p_value"] == 1.0


# --------------------------------------------------------------------------- threshold metrics
def test_wilson_interval_closed_form():
    for k, n in ((8, 10), (0, 12), (12, 12), (37, 90)):
        ph = k / n
        centre = (ph + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
        half = Z95 / (1 + Z95**2 / n) * math.sqrt(ph * (1 - ph) / n + Z95**2 / (4 * n * n))
        assert wilson_ci(k, n) == pytest.approx([centre - half, centre + half], abs=1e-12)
    assert wilson_ci(0, 0) is None


def test_classification_metrics_hand_example():
    y = [1, 1, 1, 0, 0, 0, 0, 1]
    p = [0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.5, 0.5]  # called positive at p >= 0.5
    assert confusion(y, p, 0.5) == {"tp": 3, "fp": 2, "tn": 2, "fn": 1}
    m = classification_metrics(y, p, 0.5, n_boot=100)
    assert m["sensitivity"]["value"] == 0.75 and m["specificity"]["value"] == 0.5
    assert m["ppv"]["value"] == 0.6 and m["npv"]["value"] == pytest.approx(2 / 3)
    assert m["accuracy"]["value"] == 5 / 8 and m["f1"]["value"] == pytest.approx(6 / 9)
    assert m["sensitivity"]["ci"] == wilson_ci(3, 4)
    lo, hi = m["f1"]["ci"]
    assert 0 <= lo <= 6 / 9 <= hi <= 1
    none = classification_metrics([0, 0, 0], [0.2, 0.6, 0.1], 0.5, n_boot=50)
    assert none["sensitivity"]["value"] is None and none["specificity"]["value"] == pytest.approx(2 / 3)


def _brute_youden(y, p):
    y, p = np.asarray(y), np.asarray(p)
    cands = np.unique(np.r_[p, np.inf])
    return max((p[y == 1] >= t).mean() - (p[y == 0] >= t).mean() for t in cands)


def test_youden_threshold():
    assert youden_threshold([0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.6, 0.7, 0.8]) == pytest.approx(0.45)
    rng = np.random.default_rng(8)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        y[:2] = [0, 1]
        p = np.round(rng.random(40) * 0.6 + 0.4 * y, 1)
        t = youden_threshold(y, p)
        j = (p[y == 1] >= t).mean() - (p[y == 0] >= t).mean()
        assert j == pytest.approx(_brute_youden(y, p), abs=1e-12)
        assert t not in set(p.tolist()) or t == p.min()
    # a plateau: cut-offs 0.9, 0.7 and 0.5 share J = 1/3; the middle one is taken
    assert youden_threshold([1, 0, 1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]) == pytest.approx(0.65)
    # NaN labels are ignored
    assert youden_threshold([0, np.nan, 1], [0.2, 0.9, 0.8]) == pytest.approx(0.5)
    with pytest.warns(DegenerateThresholdWarning):
        assert youden_threshold([0, 0, 0], [0.2, 0.9, 0.8]) == 0.5


# --------------------------------------------------------------------------- calibration, decision curve
def test_calibration_slope_and_intercept():
    rng = np.random.default_rng(21)
    lp = rng.normal(0, 1.5, 20000)
    p = 1 / (1 + np.exp(-lp))
    y = (rng.random(lp.size) < p).astype(int)
    good = calibration_intercept_slope(y, p)
    assert good["slope"] == pytest.approx(1, abs=0.06) and good["slope_ci"][0] < 1 < good["slope_ci"][1]
    assert good["intercept"] == pytest.approx(0, abs=0.05)
    assert good["intercept_ci"][0] < 0 < good["intercept_ci"][1]
    over = calibration_intercept_slope(y, 1 / (1 + np.exp(-2.5 * lp)))  # too extreme
    assert over["slope"] == pytest.approx(0.4, abs=0.05)
    high = calibration_intercept_slope(y, 1 / (1 + np.exp(-(lp + 1))))  # risks too high overall
    assert high["intercept"] < -0.8
    assert calibration_intercept_slope([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])["reason"]  # separation
    assert calibration_intercept_slope([0, 0], [0.1, 0.2])["slope"] is None

    assert brier([0, 1, 1], [0.2, 0.6, 1.0]) == pytest.approx((0.04 + 0.16 + 0) / 3)
    curve = reliability_curve(y, p, n_bins=10)
    assert len(curve["mean_predicted"]) == 10
    assert np.allclose(curve["mean_predicted"], curve["fraction_positive"], atol=0.05)


def test_net_benefit():
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.4, 0.5, 0.2, 0.05])
    nb = net_benefit(y, p, [0.1, 0.3, 0.45])
    for t, all_ in zip(nb["thresholds"], nb["treat_all"], strict=True):
        assert all_ == pytest.approx(2 / 5 - 3 / 5 * t / (1 - t))
    # treat p >= t. t = 0.1: TP 2, FP 2; t = 0.3: TP 2, FP 1; t = 0.45: TP 1, FP 1
    assert nb["model"][0] == pytest.approx(2 / 5 - 2 / 5 * 0.1 / 0.9)
    assert nb["model"][1] == pytest.approx(2 / 5 - 1 / 5 * 0.3 / 0.7)
    assert nb["model"][2] == pytest.approx(1 / 5 - 1 / 5 * 0.45 / 0.55)
    everyone = net_benefit(y, np.ones(5))
    assert np.allclose(everyone["model"], everyone["treat_all"])
    assert len(everyone["thresholds"]) == 99 and everyone["thresholds"][0] == 0.01


# --------------------------------------------------------------------------- RSNA PE
def test_rsna_pe_loss_hand_example():
    labels = list(EXAM_WEIGHTS)
    exams = []
    for study, truth in (("s1", 1), ("s2", 0)):
        for lab in labels:
            exams.append({"sample_id": study, "task": lab, "y_true": truth, "y_prob": 0.8})
    images = pd.DataFrame(
        {
            "sample_id": ["s1"] * 4 + ["s2"] * 2,
            "y_true": [1, 0, 0, 0, 0, 0],
            "y_prob": [0.6, 0.2, 0.2, 0.2, 0.1, 0.1],
        }
    )
    res = rsna_pe_weighted_log_loss(pd.DataFrame(exams), images)
    w = sum(EXAM_WEIGHTS.values())
    exam_num = w * -math.log(0.8) + w * -math.log(0.2)  # s1 all labels 1 at p 0.8; s2 all 0 at p 0.8
    q = 0.25  # s1: one positive image of four; s2: none → image weight 0
    img_num = IMAGE_WEIGHT * q * (-math.log(0.6) - 3 * math.log(0.8))
    expected = (exam_num + img_num) / (2 * w + 4 * IMAGE_WEIGHT * q)
    assert res["loss"] == pytest.approx(expected, rel=1e-12)
    assert res["image_weight"] == pytest.approx(IMAGE_WEIGHT)
    with pytest.raises(ValueError, match="lack"):
        rsna_pe_weighted_log_loss(pd.DataFrame(exams[:-1]), images)


# --------------------------------------------------------------------------- report
def _frame(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for split, n_pat in (("train", 60), ("val", 40), ("test", 50), ("external", 30)):
        for i in range(n_pat):
            pid, risk = f"{split}-{i:03d}", rng.normal()
            for r in range(rng.integers(1, 4)):
                for task in ("a", "b"):
                    y = float(rng.random() < 1 / (1 + np.exp(-2 * risk)))
                    if split == "external" and task == "b":
                        y = 0.0  # one class only
                    rows.append(
                        {
                            "sample_id": f"{pid}-{r}",
                            "patient_id": pid,
                            "split": split,
                            "center": "c1" if i % 3 else "c2",
                            "task": task,
                            "y_true": y,
                            "y_prob": 1 / (1 + np.exp(-(risk + rng.normal(0, 0.8)))),
                        }
                    )
    df = pd.DataFrame(rows)
    df.loc[df.index[::17], "y_true"] = np.nan  # unknown labels
    return df


def test_evaluate_predictions_structure_and_degenerate_split(tmp_path):
    df = _frame()
    m = evaluate_predictions(df, {"a": 0.5}, n_boot=100, seed=0)
    json.dumps(m, allow_nan=False)
    assert list(m["tasks"]) == ["a", "b"]
    a = m["tasks"]["a"]
    assert list(a["splits"]) == ["test", "external", "val", "train"]
    test = a["splits"]["test"]
    rows = df[(df.task == "a") & (df.split == "test")]
    known = rows[rows.y_true.notna()]
    assert test["n"] == len(known) and test["n_unknown_label"] == rows.y_true.isna().sum()
    assert test["n_patients"] == known.patient_id.nunique()
    assert test["auroc"]["value"] == pytest.approx(roc_auc_score(known.y_true, known.y_prob))
    assert test["auprc"]["value"] == pytest.approx(average_precision_score(known.y_true, known.y_prob))
    for key in ("delong_ci", "bootstrap_ci"):
        lo, hi = test["auroc"][key]
        assert lo < test["auroc"]["value"] < hi
    assert set(test["confusion"]) == {"tp", "fp", "tn", "fn"} and sum(test["confusion"].values()) == test["n"]
    for key in ("sensitivity", "specificity", "ppv", "npv", "accuracy", "f1"):
        assert set(test[key]) >= {"value", "ci"}
    assert set(test["calibration"]) >= {"intercept", "slope", "curve"}
    assert set(test["decision_curve"]) == {"thresholds", "model", "treat_all"}
    centers = {(c["split"], c["center"]) for c in a["centers"]}
    assert ("test", "c1") in centers and ("external", "c2") in centers

    ext = m["tasks"]["b"]["splits"]["external"]  # one class
    assert ext["auroc"]["value"] is None and "one class" in ext["auroc"]["reason"]
    assert ext["auprc"]["value"] is None and ext["calibration"]["slope"] is None
    assert m["tasks"]["b"]["threshold"] is None and "no threshold" in ext["sensitivity"]["reason"]

    path = tmp_path / "out" / "metrics.json"
    write_metrics(m, path)
    assert json.loads(path.read_text()) == m
    assert [f.name for f in path.parent.iterdir()] == ["metrics.json"]


def test_evaluate_predictions_ignores_row_order():
    df = _frame(1)
    m1 = evaluate_predictions(df, {"a": 0.4, "b": 0.6}, n_boot=60, seed=3)
    shuffled = df.sample(frac=1.0, random_state=5)
    m2 = evaluate_predictions(shuffled, {"a": 0.4, "b": 0.6}, n_boot=60, seed=3)
    assert m1 == m2
    with pytest.raises(ValueError, match="duplicate"):
        evaluate_predictions(pd.concat([df, df.iloc[:1]]), {}, n_boot=10)


def test_compare_heads_joins_on_sample_id():
    df = _frame(2)
    rng = np.random.default_rng(0)
    b = df.copy()
    b["y_prob"] = np.clip(b["y_prob"] + rng.normal(0, 0.3, len(b)), 0, 1)
    b = b.sample(frac=1.0, random_state=1)  # different row order
    b = b[b.sample_id != "test-001-0"]  # a sample the second head lacks
    res = compare_heads(df, b, task="a", split="test", n_boot=200, seed=0)
    assert res["n_only_in_a"] == 1 and res["only_in_a"] == ["test-001-0"] and res["n_only_in_b"] == 0

    a_rows = df[(df.task == "a") & (df.split == "test") & df.y_true.notna()].set_index("sample_id")
    b_rows = b[(b.task == "a") & (b.split == "test") & b.y_true.notna()].set_index("sample_id")
    shared = a_rows.index.intersection(b_rows.index)
    ref = delong_paired(
        a_rows.loc[shared, "y_true"], a_rows.loc[shared, "y_prob"], b_rows.loc[shared, "y_prob"]
    )
    assert res["delong"]["diff"] == pytest.approx(ref["diff"], abs=1e-12)
    assert res["delong"]["p_value"] == pytest.approx(ref["p_value"], rel=1e-9)
    assert res["bootstrap"]["value"] == pytest.approx(ref["diff"], abs=1e-12)
    ext = compare_heads(df, b, task="b", split="external", n_boot=50)
    assert ext["delong"] is None and ext["reason"]


def test_warnings_are_not_errors_in_normal_use():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, p, groups = _clustered(50, 9)
        bootstrap_auc_ci(y, p, groups, n_boot=50)
        calibration_intercept_slope(y, p)


# --------------------------------------------------------------------------- report-metric registry
def test_a_split_holds_the_counts_then_every_registered_metric_in_order():
    m = evaluate_predictions(_frame(3), {"a": 0.5}, n_boot=20, seed=0)
    counts = ["n", "n_patients", "n_positive", "prevalence", "n_unknown_label", "n_missing_prob"]
    for task in m["tasks"].values():
        for split in task["splits"].values():
            assert list(split) == counts + [metric.key for metric in list_metrics()]


def test_every_report_column_reads_a_number_and_its_interval():
    """The dotted paths of the columns exist in what the metrics store (a typo would print '—')."""
    test = evaluate_predictions(_frame(4), {"a": 0.5}, n_boot=50, seed=0)["tasks"]["a"]["splits"]["test"]
    for metric in list_metrics():
        for column in metric.columns:
            value, ci = column.read(test)
            if column.value:
                assert isinstance(value, float) and math.isfinite(value), column
            if column.ci:
                assert len(ci) == 2 and ci[0] <= ci[1], column
    with pytest.raises(ValueError, match="report metric 'auroc' is registered twice"):
        register_metric(list_metrics()[0])
