# medflow: multimodal medical cohorts from raw files to trained models and evaluation reports.
# Run `snakemake --cores 2` for every study of config/config.yaml, or name one target, e.g.
# `snakemake --cores 2 results/clnm/splits.csv`.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


# Our own check first: it names the offending key and what is allowed, and checks what a JSON
# schema cannot (labels named in split.stratify exist, fractions add up, ...). Snakemake's
# validate then fills in the schema's defaults.
include: "workflow/rules/common.smk"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/cohort.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/stage1.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/stage2.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# Seconds of work each: on a cluster they run on the submitting host instead of waiting in the queue.
localrules:
    validate_manifest,
    split,
    fold_ensemble,
    study_report,


rule all:
    input:
        PLAN.all_targets(),
    default_target: True
