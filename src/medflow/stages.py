"""Stage versions. Snakemake cannot see changes in imported library code, so each rule carries its
stage's version in ``params``: bump a number here when a change alters that stage's outputs and
exactly that stage and everything downstream of it reruns."""

STAGE_VERSIONS: dict[str, int] = {
    "demo": 3,
    "import": 2,
    "manifest": 1,
    "ingest": 2,
    "split": 1,
    "stage1": 5,
    "features": 1,
    "encode": 1,
    "stage2": 3,
    "evaluate": 2,
    "report": 2,
}
