"""Classical baselines (SVM, random forest, GBDT, XGBoost, logistic regression) on any set of
feature inputs, in scikit-learn's fit/predict shape.

Every fitted step — the table encoding (imputation, one-hot, z-score), scaling, optional PCA and
the SVM's Platt calibration — lives inside the searched pipeline, so cross-validation refits each
on its fold's training part; the hyper-parameter search is a grid over patient-grouped, stratified
folds of the *training* split (the validation split only picks the decision threshold, the test
split is never seen), and the SVM's calibration folds are grouped by patient too.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from medflow.heads.inputs import HeadData
from medflow.heads.tabular import design_encoder, design_frame

log = logging.getLogger(__name__)


def group_folds(y: np.ndarray, groups: np.ndarray, wanted: int, seed: int) -> StratifiedGroupKFold | None:
    """Patient-grouped stratified folds, as many as the rarer class and the patients allow."""
    positives = len(np.unique(groups[y == 1]))
    negatives = len(np.unique(groups[y == 0]))
    folds = min(wanted, positives, negatives)
    if folds < 2:
        return None
    return StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)


class GroupedPlattSVC(ClassifierMixin, BaseEstimator):
    """A linear SVM whose probabilities are Platt-scaled on out-of-fold decision values of
    patient-grouped folds: ``SVC(probability=True)`` and ``CalibratedClassifierCV(cv=3)`` draw
    ungrouped folds, so a patient's other samples would score its calibration fold optimistically.
    ``fit`` takes the patient of every row as ``groups``."""

    def __init__(self, C: float = 1.0, folds: int = 3, random_state: int = 0) -> None:
        self.C = C
        self.folds = folds
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray) -> GroupedPlattSVC:
        folds = group_folds(np.asarray(y), np.asarray(groups), self.folds, self.random_state)
        if folds is None:
            raise ValueError("Platt calibration on patient-grouped folds needs at least 2 patients of each class")
        # explicit (train, test) pairs: CalibratedClassifierCV(ensemble=False) passes no groups to its cv
        splits = list(folds.split(X, y, groups))
        svc = SVC(kernel="linear", C=self.C, random_state=self.random_state)
        self.calibrated_ = CalibratedClassifierCV(svc, method="sigmoid", cv=splits, ensemble=False).fit(X, y)
        self.classes_ = self.calibrated_.classes_
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.calibrated_.predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.calibrated_.predict(X)


class ClassicalHead:
    """One tuned pipeline per task: design encoding → StandardScaler → [PCA] → estimator, every step
    fitted inside the patient-grouped search. A subclass per type names the estimator."""

    # the SVM calibrates on folds of the patients of the rows it is fitted on, so it needs their groups
    fit_with_groups = False

    def __init__(self, spec: Mapping[str, Any], tasks: list[str]) -> None:
        self.kind = spec["type"]
        self.inputs = list(spec["inputs"])
        self.tasks = tasks
        self.seed = int(spec.get("seed", 0))
        self.cv_folds = int(spec.get("cv_folds", 5))
        self.reduce = spec.get("reduce")  # PCA components (int) or None
        self.grid_override = dict(spec.get("grid") or {})

    def estimator(self, device: Any = None) -> tuple[Any, dict[str, list[Any]]]:
        """The unfitted estimator and its default search grid (the published settings are in it)."""
        raise NotImplementedError

    def _pipeline(self, encoder: ColumnTransformer, device: Any = None) -> tuple[Pipeline, dict[str, list[Any]]]:
        model, grid = self.estimator(device)
        grid.update(self.grid_override)
        steps: list[tuple[str, Any]] = [("design", clone(encoder)), ("scale", StandardScaler())]
        if self.reduce:
            steps.append(("reduce", PCA(n_components=int(self.reduce), random_state=self.seed)))
        steps.append(("model", model))
        return Pipeline(steps), {f"model__{k}": list(v) for k, v in grid.items()}

    def _check_reduce(self, x: pd.DataFrame, encoder: ColumnTransformer) -> None:
        if not self.reduce:
            return
        width = clone(encoder).fit(x).transform(x.iloc[:1]).shape[1]  # fitted for its output width only
        if int(self.reduce) > min(len(x), width):
            raise ValueError(f"reduce = {self.reduce} PCA components, but the training data is {len(x)}×{width}")

    def fit(self, train: HeadData, val: HeadData, out_dir: Any = None, device: Any = None) -> ClassicalHead:
        """Tune and fit on ``train`` (``val`` is not used: it picks the threshold afterwards);
        XGBoost runs on ``device`` when that is a GPU."""
        x = design_frame(train, self.inputs)
        encoder = design_encoder(train, self.inputs)
        self._check_reduce(x, encoder)
        self.models_: dict[str, Any] = {}
        self.search_: dict[str, dict[str, Any]] = {}
        labels = train.labels()
        for t, task in enumerate(self.tasks):
            known = ~np.isnan(labels[:, t])
            y, groups = labels[known, t].astype(int), train.groups[known]
            if len(np.unique(y)) < 2:
                raise ValueError(f"task {task!r}: the training split holds a single class; nothing to learn")
            pipeline, grid = self._pipeline(encoder, device)
            fit_params = {"model__groups": groups} if self.fit_with_groups else {}
            folds = group_folds(y, groups, self.cv_folds, self.seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                if folds is None or all(len(v) == 1 for v in grid.values()):
                    log.warning("task %s: too few patients per class for grouped CV; fitting the default settings", task)
                    pipeline.set_params(**{k: v[0] for k, v in grid.items()})
                    self.models_[task] = pipeline.fit(x.loc[known], y, **fit_params)
                    self.search_[task] = {"best_params": {k: v[0] for k, v in grid.items()}, "cv_auc": None}
                    continue
                search = GridSearchCV(pipeline, grid, scoring="roc_auc", cv=folds, n_jobs=1, refit=True,
                                      error_score=np.nan)
                search.fit(x.loc[known], y, groups=groups, **fit_params)  # fit_params are cut per CV fold
            self.models_[task] = search.best_estimator_
            self.search_[task] = {
                "best_params": {k.rsplit("__", 1)[-1]: _plain(v) for k, v in search.best_params_.items()},
                "cv_auc": float(search.best_score_), "folds": folds.get_n_splits(),
            }
            log.info("%s / %s: grouped %d-fold CV AUC %.3f with %s", self.kind, task, folds.get_n_splits(),
                     search.best_score_, self.search_[task]["best_params"])
        return self

    def predict_proba(self, data: HeadData) -> np.ndarray:
        x = design_frame(data, self.inputs)
        return np.column_stack([self.models_[task].predict_proba(x)[:, 1] for task in self.tasks])

    def save(self, out_dir: Any) -> dict[str, Any]:
        joblib.dump({"inputs": self.inputs, "models": self.models_}, out_dir / "model.joblib")
        return {"model_file": "model.joblib", "search": self.search_}


class SVMHead(ClassicalHead):
    """Published: linear kernel, C = 0.002; probabilities by Platt scaling on patient-grouped inner folds."""

    fit_with_groups = True

    def estimator(self, device: Any = None) -> tuple[Any, dict[str, list[Any]]]:
        return GroupedPlattSVC(random_state=self.seed), {"C": [0.002, 0.02, 0.2, 2.0]}


class RandomForestHead(ClassicalHead):
    """Published: 375 trees, leaf 30, split 60, depth 7, entropy."""

    def estimator(self, device: Any = None) -> tuple[Any, dict[str, list[Any]]]:
        return (RandomForestClassifier(n_estimators=375, criterion="entropy", random_state=self.seed, n_jobs=1),
                {"max_depth": [7], "min_samples_leaf": [1, 5]})


class GradientBoostingHead(ClassicalHead):
    """Published: 45 estimators."""

    def estimator(self, device: Any = None) -> tuple[Any, dict[str, list[Any]]]:
        return (GradientBoostingClassifier(random_state=self.seed, subsample=0.8, max_features="sqrt"),
                {"n_estimators": [45, 150], "max_depth": [2], "learning_rate": [0.1]})


class XGBoostHead(ClassicalHead):
    """Histogram trees, on ``device`` when that is a GPU."""

    def estimator(self, device: Any = None) -> tuple[Any, dict[str, list[Any]]]:
        from xgboost import XGBClassifier  # only this head pays for importing XGBoost

        where = "cuda" if getattr(device, "type", "cpu") == "cuda" else "cpu"
        model = XGBClassifier(tree_method="hist", device=where, random_state=self.seed, n_jobs=1,
                              eval_metric="logloss", colsample_bytree=0.5)
        return model, {"n_estimators": [100, 300], "max_depth": [2], "learning_rate": [0.05]}


class LogisticRegressionHead(ClassicalHead):
    """L2-regularised."""

    def estimator(self, device: Any = None) -> tuple[Any, dict[str, list[Any]]]:
        return LogisticRegression(max_iter=5000), {"C": [0.001, 0.01, 0.1, 1.0]}


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
