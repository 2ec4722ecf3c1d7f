"""The public RSNA-STR PE layout (train.csv columns, labels) and what the import makes of it."""

from __future__ import annotations

SOURCE = "rsna-pe"
CENTER = "rsna"
MODALITY = "ct_series"
STUDY, SERIES, SOP = "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"
ID_COLUMNS = (STUDY, SERIES, SOP)
SLICE_LABEL = "pe_present_on_image"
EXAM_COLUMNS = (
    "negative_exam_for_pe", "qa_motion", "qa_contrast", "flow_artifact", "rv_lv_ratio_gte_1", "rv_lv_ratio_lt_1",
    "leftsided_pe", "chronic_pe", "true_filling_defect_not_pe", "rightsided_pe", "acute_and_chronic_pe",
    "central_pe", "indeterminate",
)  # fmt: skip
REQUIRED_COLUMNS = (*ID_COLUMNS, SLICE_LABEL, *EXAM_COLUMNS)  # the 17 public columns
# The nine exam labels scored by the competition, in its order.
SCORED_LABELS = (
    "negative_exam_for_pe", "rv_lv_ratio_gte_1", "rv_lv_ratio_lt_1", "leftsided_pe", "chronic_pe",
    "rightsided_pe", "acute_and_chronic_pe", "central_pe", "indeterminate",
)  # fmt: skip
LABELS = ("pe", *SCORED_LABELS)
MANIFEST_COLUMNS = ("sample_id", "patient_id", "center", *LABELS, MODALITY)
SLICE_LABEL_COLUMNS = ("sample_id", "sop_instance_uid", SLICE_LABEL)
NO_PATIENT_KEY_WARNING = (
    "RSNA-STR PE publishes no patient key: patient_id is the StudyInstanceUID, so splits are grouped by "
    "study and two studies of one patient may fall into different splits."
)
