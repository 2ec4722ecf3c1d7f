"""Import the RSNA-STR Pulmonary Embolism layout: ``train.csv`` + ``train/<Study>/<Series>/<SOP>.dcm``.

``train.csv`` has one row per CT slice (17 columns: three UIDs, ``pe_present_on_image`` and 13
exam-level labels repeated on every row of a study). The importer writes, into ``out_dir``:

- ``manifest.csv``: one row per study (``sample_id`` = ``patient_id`` = StudyInstanceUID: RSNA
  publishes no patient key), ``center`` ``rsna``, the labels ``pe`` (= 1 − negative_exam_for_pe) and
  the nine scored exam labels, and ``ct_series`` = the series folder relative to ``out_dir``;
- ``slice_labels.csv``: ``sample_id, sop_instance_uid, pe_present_on_image`` for every CSV row;
- ``import_problems.csv``: what did not fit (inconsistent exam labels, several series, missing or
  unlisted ``.dcm`` files), each with what was done about it;
- ``cohort.json``.

No pixel data is read and nothing depends on the CSV row order: ingest sorts each series by
ImagePositionPatient and attaches slice labels by SOP Instance UID. The CSV work is vectorised;
file existence is checked with one ``os.scandir`` per study and per series folder, optionally on
several threads.
"""

from medflow.cohort.importers.rsna_pe.importer import import_rsna_pe
from medflow.cohort.importers.rsna_pe.layout import (
    EXAM_COLUMNS,
    MANIFEST_COLUMNS,
    REQUIRED_COLUMNS,
    SCORED_LABELS,
)

__all__ = ["EXAM_COLUMNS", "MANIFEST_COLUMNS", "REQUIRED_COLUMNS", "SCORED_LABELS", "import_rsna_pe"]
