"""The report metrics, one :class:`ReportMetric` entry each: its key in every split of
metrics.json, the function that computes it from the split (:class:`SplitData`), and the columns
that show it. :func:`medflow.evaluate.metrics.evaluate_predictions` stores every entry in
registration order; the model page's performance table shows every column, the study page the
columns that name ``overview`` splits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from medflow.evaluate.calibration import brier, calibration_intercept_slope, reliability_curve
from medflow.evaluate.decision import net_benefit
from medflow.evaluate.split_data import SplitData
from medflow.registry import Registry


@dataclass(frozen=True)
class Column:
    """A report column: a number (``value``) and/or its interval (``ci``, printed after it), each a
    dotted path into a split's metrics (``"auroc.value"``, ``"calibration.slope"``); ``fmt``: how
    the number is printed (``num``: 3 decimals, ``pct``: percent); ``overview``: the splits whose
    cell the study page shows too."""

    label: str
    value: str | None = None
    ci: str | None = None
    fmt: Literal["num", "pct"] = "num"
    overview: tuple[str, ...] = ()

    def read(self, split_metrics: Mapping[str, Any]) -> tuple[Any, Any]:
        """(value, interval) in one split's metrics; None where absent."""
        return _at(split_metrics, self.value), _at(split_metrics, self.ci)


def _at(tree: Any, path: str | None) -> Any:
    if path is None:
        return None
    for key in path.split("."):
        tree = tree.get(key) if isinstance(tree, Mapping) else None
    return tree


@dataclass(frozen=True)
class ReportMetric:
    """``key``: its key in each split of metrics.json; ``compute``: its JSON-able value there;
    ``columns``: where the pages show it (none: it feeds a figure or the page text)."""

    key: str
    compute: Callable[[SplitData], Any]
    columns: tuple[Column, ...] = ()


_REGISTRY: Registry[ReportMetric] = Registry("report metric")


def register_metric(metric: ReportMetric) -> ReportMetric:
    """Add a metric after the registered ones; its key must be new."""
    return _REGISTRY.add(metric.key, metric)


def list_metrics() -> list[ReportMetric]:
    """Every metric, in registration order (the order of metrics.json and of the table columns)."""
    return _REGISTRY.values()


# --- the built-in metrics -----------------------------------------------------------------------


def _at_threshold(key: str) -> Callable[[SplitData], Any]:
    return lambda split: split.at_threshold[key]


def _brier(split: SplitData) -> float | None:
    return brier(split.y, split.p) if split.y.size else None


def _calibration(split: SplitData) -> dict:
    if split.y.size:
        fit = calibration_intercept_slope(split.y, split.p, split.level)
        curve = reliability_curve(split.y, split.p)
    else:
        fit = {"reason": "no labelled samples"}
        curve = {"mean_predicted": [], "fraction_positive": []}
    return {
        "intercept": fit.get("intercept"),
        "intercept_ci": fit.get("intercept_ci"),
        "slope": fit.get("slope"),
        "slope_ci": fit.get("slope_ci"),
        "reason": fit.get("reason"),
        "curve": curve,
    }


def _decision_curve(split: SplitData) -> dict | None:
    if not split.y.size:
        return None
    curve = net_benefit(split.y, split.p)
    return {"thresholds": curve["thresholds"], "model": curve["model"], "treat_all": curve["treat_all"]}


register_metric(ReportMetric("auroc", lambda split: split.ranking[0], (
    Column("AUROC", "auroc.value", overview=("test", "external", "val")),
    Column("DeLong 95% CI", ci="auroc.delong_ci", overview=("test", "external")),
    Column("bootstrap 95% CI", ci="auroc.bootstrap_ci"),
)))
register_metric(ReportMetric("auprc", lambda split: split.ranking[1], (
    Column("AUPRC (95% CI)", "auprc.value", "auprc.bootstrap_ci"),
)))
register_metric(ReportMetric("threshold", lambda split: split.threshold))  # printed once per task
register_metric(ReportMetric("confusion", _at_threshold("confusion")))  # shown as a figure
register_metric(ReportMetric("sensitivity", _at_threshold("sensitivity"), (
    Column("sensitivity", "sensitivity.value", "sensitivity.ci", overview=("test",)),
)))
register_metric(ReportMetric("specificity", _at_threshold("specificity"), (
    Column("specificity", "specificity.value", "specificity.ci", overview=("test",)),
)))
register_metric(ReportMetric("ppv", _at_threshold("ppv"), (Column("PPV", "ppv.value", "ppv.ci"),)))
register_metric(ReportMetric("npv", _at_threshold("npv"), (Column("NPV", "npv.value", "npv.ci"),)))
register_metric(ReportMetric("accuracy", _at_threshold("accuracy"), (
    Column("accuracy", "accuracy.value", "accuracy.ci"),
)))
register_metric(ReportMetric("f1", _at_threshold("f1"), (Column("F1", "f1.value", "f1.ci"),)))
register_metric(ReportMetric("brier", _brier, (Column("Brier", "brier", overview=("test",)),)))
register_metric(ReportMetric("calibration", _calibration, (  # its curve is a figure
    Column("cal. intercept", "calibration.intercept"), Column("cal. slope", "calibration.slope"),
)))
register_metric(ReportMetric("decision_curve", _decision_curve))  # shown as a figure
