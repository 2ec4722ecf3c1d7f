"""Import MIMIC-IV + MIMIC-CXR-JPG + MIMIC-IV-Note into an ``ehr`` cohort (one sample per admission).

Layouts: MIMIC-IV ``hosp/`` (v1.0: ``core/`` for admissions and patients, ``ethnicity`` for ``race``)
and ``icu/``; MIMIC-CXR-JPG ``mimic-cxr-2.0.0-metadata.csv.gz`` + ``files/p10/p<subject>/s<study>/<dicom>.jpg``;
MIMIC-IV-Note ``note/radiology.csv.gz``. Every table may be ``.csv.gz`` or ``.csv``. The importer writes,
into ``out_dir``:

- ``manifest.csv``: ``sample_id`` = hadm_id, ``patient_id`` = subject_id, ``center`` ``mimic-iv``,
  ``mortality``, ``longstay``, ``readmission``, ``cxr`` (the last usable image of the views inside the
  window), ``cxr_hours``, ``notes`` (``notes/<hadm_id>``);
- ``events.csv`` (admission_id, hours, variable, value), ``notes/<hadm_id>/HHH.H_radiology.txt``,
  ``demographics.csv``, ``cxr_images.csv`` (every usable qualifying image in time order),
  ``import_problems.csv`` (images that are missing or do not decode) and ``cohort.json`` (the cohort flow).

Big tables (chartevents, labevents, procedureevents, radiology) are streamed by DuckDB with the item,
admission and time filters applied during the scan.
"""

from medflow.cohort.importers.mimic_iv.importer import import_mimic_iv
from medflow.cohort.importers.mimic_iv.layout import CHART_ITEMS, LAB_ITEMS, LABELS, PROCEDURE_ITEMS

__all__ = ["CHART_ITEMS", "LABELS", "LAB_ITEMS", "PROCEDURE_ITEMS", "import_mimic_iv"]
