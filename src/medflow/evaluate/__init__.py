"""Statistics behind medflow's evaluation reports (input: predictions.csv, long format).

Hand-written only where no package does it: fast DeLong (:mod:`.roc`), the vectorised
patient-cluster bootstrap (:mod:`.bootstrap`) and the calibration fits' framing; scikit-learn,
SciPy and statsmodels do the rest. :func:`evaluate_predictions` is the entry point.
"""

from medflow.evaluate._frame import load_predictions
from medflow.evaluate.bootstrap import (
    bootstrap_auc_ci,
    bootstrap_cis,
    bootstrap_metric_ci,
    paired_bootstrap_delta_auc,
)
from medflow.evaluate.calibration import brier, calibration_intercept_slope, reliability_curve
from medflow.evaluate.classification import classification_metrics, confusion, f1_bootstrap, wilson_ci
from medflow.evaluate.compare import compare_heads
from medflow.evaluate.decision import net_benefit
from medflow.evaluate.metrics import evaluate_predictions, write_metrics
from medflow.evaluate.pe import rsna_pe_weighted_log_loss
from medflow.evaluate.roc import delong, delong_ci, delong_paired
from medflow.evaluate.threshold import DegenerateThresholdWarning, youden_threshold

__all__ = [
    "DegenerateThresholdWarning",
    "bootstrap_auc_ci",
    "bootstrap_cis",
    "bootstrap_metric_ci",
    "brier",
    "calibration_intercept_slope",
    "classification_metrics",
    "compare_heads",
    "confusion",
    "delong",
    "delong_ci",
    "delong_paired",
    "evaluate_predictions",
    "f1_bootstrap",
    "load_predictions",
    "net_benefit",
    "paired_bootstrap_delta_auc",
    "reliability_curve",
    "rsna_pe_weighted_log_loss",
    "wilson_ci",
    "write_metrics",
    "youden_threshold",
]
