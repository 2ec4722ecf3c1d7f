"""Sentence pools for the demo clinical notes: per task, sentences that lean towards the outcome
('concerning') or away from it ('reassuring'), plus neutral filler. Word choice is the signal."""

from __future__ import annotations

CONCERNING = {
    "mortality": [
        "Patient remains hypotensive despite fluids and requires escalating vasopressor support.",
        "Family meeting held to discuss goals of care and code status.",
        "Mental status declining, minimally responsive to voice.",
        "Lactate trending up, concern for worsening septic shock.",
        "Diffuse bilateral airspace opacities, worsening compared with prior.",
    ],
    "longstay": [
        "Wound with ongoing drainage, will need prolonged intravenous antibiotics.",
        "Physical therapy recommends discharge to a rehabilitation facility.",
        "Persistent fevers overnight, blood cultures pending.",
        "Remains on high-flow oxygen, weaning slowly.",
        "Moderate pleural effusion layering at the base.",
    ],
    "readmission": [
        "History of multiple prior admissions for heart failure exacerbation.",
        "Patient reports poor adherence to home medications.",
        "Lives alone with limited social support.",
        "Follow-up appointment could not be arranged before discharge.",
        "Cardiac silhouette is enlarged.",
    ],
}
REASSURING = {
    "mortality": [
        "Hemodynamically stable off vasopressors.",
        "Alert and oriented, conversing appropriately.",
        "Tolerating oral diet and ambulating with assistance.",
        "Lungs are clear without focal consolidation.",
    ],
    "longstay": [
        "Anticipate discharge home within the next day or two.",
        "Afebrile and off supplemental oxygen.",
        "Cleared by physical therapy for discharge home.",
        "No pleural effusion.",
    ],
    "readmission": [
        "Good understanding of discharge medications demonstrated.",
        "Strong family support at home.",
        "Follow-up with primary care arranged within one week.",
        "Heart size is normal.",
    ],
}
NEUTRAL = [
    "Vital signs reviewed.",
    "Medications reconciled with pharmacy.",
    "Labs drawn this morning.",
    "Patient seen and examined.",
    "Plan discussed with the team.",
    "Lines and tubes unchanged.",
]
HEADERS = {
    "radiology": "RADIOLOGY REPORT. Portable chest radiograph.",
    "nursing": "NURSING NOTE.",
    "physician": "PHYSICIAN PROGRESS NOTE.",
}
