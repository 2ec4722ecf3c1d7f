"""Snakemake adapter: the HTML report of one model (logic in medflow.report.build)."""

from medflow.logs import rule_log
from medflow.report.build import build_head_report

smk = snakemake  # noqa: F821 (injected by Snakemake)
with rule_log(smk.log[0]):
    build_head_report(
        smk.output.html,
        study_name=smk.wildcards.study,
        study=dict(smk.params.study),
        config=dict(smk.config),
        name=smk.wildcards.name,
        kind=smk.params.kind,
        spec=dict(smk.params.spec),
        predictions=smk.input.predictions,
        metrics=smk.input.metrics,
        splits=smk.input.splits,
        manifest=smk.input.manifest,
        label=smk.params.label,
        cohort_info=smk.input.cohort,
        problems=list(smk.input.problems),
        head_info=smk.input.get("info"),
        history=smk.input.get("history") or None,
        excluded=smk.input.get("excluded"),
        references=dict(zip(smk.params.reference_names, smk.input.references, strict=True)),
        image_model=(smk.input.ingest, smk.input.model) if smk.params.kind == "stage1" else None,
        n_boot=smk.params.n_boot,
        seed=smk.params.seed,
        oracle=smk.input.get("oracle"),
        modalities=list(smk.params.modalities),
    )
