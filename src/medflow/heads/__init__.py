"""Stage-2 heads: fusion, sequence and classical models on stage-1 features and tables, one
fit/predict shape for all (:func:`medflow.heads.run.run_head` runs one end to end)."""
