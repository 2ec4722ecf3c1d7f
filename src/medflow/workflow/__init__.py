"""The Snakemake workflow's side of the library, plain Python and testable without Snakemake:
``layout`` (where every output lives) and ``plan`` (what the rules build and read for a checked config).

Nothing is imported here, so that the layout comes without the plan's imports (heads, reports).
"""
