"""Shared test set-up."""

from __future__ import annotations

import pydicom.data.download

# pydicom's test-file lookup falls through to a download that blocks ~21 s per file offline
# (docs: /work/shared/FACTS.md); make every lookup local-only.
pydicom.data.download._SIMULATE_NETWORK_OUTAGE = True
