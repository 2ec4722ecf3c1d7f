"""Ingest: every modality kind → the HDF5/parquet contract of docs/contracts.md."""

from medflow.ingest.run import KINDS, IngestSummary, ingest_modality

__all__ = ["KINDS", "IngestSummary", "ingest_modality"]
