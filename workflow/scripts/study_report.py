"""Snakemake adapter: the study overview page (logic in medflow.report.build)."""

from medflow.logs import rule_log
from medflow.report.build import build_study_report

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    models = {
        name: (kind, metrics, predictions)
        for name, kind, metrics, predictions in zip(
            smk.params.names, smk.params.kinds, smk.input.metrics, smk.input.predictions, strict=True
        )
    }
    build_study_report(
        smk.output.html,
        study_name=smk.wildcards.study,
        study=dict(smk.params.study),
        config=dict(smk.config),
        models=models,
        splits=smk.input.splits,
        manifest=smk.input.manifest,
        label=smk.params.label,
        cohort_info=smk.input.cohort,
        problems=list(smk.input.problems),
        oracle=smk.input.get("oracle"),
        modalities=dict(smk.params.modalities),
    )
