"""Snakemake adapter: write a demo cohort (logic in medflow.cohort.demo)."""

from pathlib import Path

from medflow.cohort.demo import generate_demo_cohort
from medflow.logs import rule_log

with rule_log(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    generate_demo_cohort(
        snakemake.params.template,  # noqa: F821
        Path(snakemake.output.manifest).parent,  # noqa: F821
        patients=snakemake.params.patients,  # noqa: F821
        image_size=snakemake.params.image_size,  # noqa: F821
        seed=snakemake.params.seed,  # noqa: F821
    )
