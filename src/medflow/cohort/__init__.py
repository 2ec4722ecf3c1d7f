"""Cohorts: the manifest contract, the demo generator and importers of public layouts."""
