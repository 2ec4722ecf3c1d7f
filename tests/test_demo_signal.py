"""The planted-signal maths of the demo generator, and the separations each template promises."""

import numpy as np
import pytest

from medflow.cohort.demo import brainmets, clnm, ehr, lnmc, pe
from medflow.cohort.demo.signal import draw_labels, empirical_auc, latent, oracle_auc


def test_oracle_auc_formula():
    assert oracle_auc([0.0]) == pytest.approx(0.5)
    assert oracle_auc([1.0]) == pytest.approx(0.7602, abs=1e-4)  # Phi(1/sqrt 2)
    # independent modalities add in quadrature
    assert oracle_auc([0.6, 0.8]) == pytest.approx(oracle_auc([1.0]))


def test_empirical_auc_matches_sklearn_and_handles_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    score = np.round(rng.normal(size=200) + y, 1)  # rounding makes ties
    assert empirical_auc(score, y) == pytest.approx(roc_auc_score(y, score))
    assert np.isnan(empirical_auc(score, np.zeros(200)))


def test_latent_reaches_the_oracle_on_many_samples():
    rng = np.random.default_rng(1)
    y = draw_labels(rng, 20000, 0.3)
    assert y.mean() == pytest.approx(0.3)
    scores = {d: latent(rng, y, d) for d in (0.8, 1.2)}
    for d, s in scores.items():
        assert empirical_auc(s, y) == pytest.approx(oracle_auc([d]), abs=0.01)
    fused = 0.8 * scores[0.8] + 1.2 * scores[1.2]
    assert empirical_auc(fused, y) == pytest.approx(oracle_auc([0.8, 1.2]), abs=0.01)


def test_draw_labels_keeps_both_classes_in_tiny_cohorts():
    rng = np.random.default_rng(2)
    for n in (2, 3, 5):
        y = draw_labels(rng, n, 0.12)
        assert 0 < y.sum() < n


@pytest.mark.parametrize("d", [clnm.D, *ehr.D.values()])
def test_fusion_studies_single_modalities_in_range_and_fusion_clearly_better(d):
    singles = [oracle_auc([v]) for v in d.values()]
    assert all(0.65 <= a <= 0.85 for a in singles), singles
    assert oracle_auc(list(d.values())) >= max(singles) + 0.05


@pytest.mark.parametrize("module", [brainmets, lnmc, pe])
def test_single_modality_studies_in_range(module):
    for v in module.D.values():
        assert 0.65 <= oracle_auc([v]) <= 0.85
