"""Demo cohort imitating the MIMIC-IV multimodal risk study: EHR events, chest X-ray and notes.

Admissions (samples) are grouped by patient. Three tasks (mortality, longstay, readmission) each
have their own latent per modality: events shift the per-admission level of a few variables, the
chest X-ray shows opacities (mortality), an effusion (longstay) and a larger heart (readmission), and
notes pick concerning sentences with a probability that rises with the latent.

A few events, notes and X-rays lie outside the 48 h observation window (the hours column of
events.csv, the note file names, the manifest column ``cxr_hours``): ingest must leave them out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from medflow.cohort.demo import shapes
from medflow.cohort.demo.common import (
    assign_centres,
    cohort_info,
    fake_patient,
    progress,
    to_uint8,
    write_csv,
    write_json,
    write_png,
)
from medflow.cohort.demo.notes_text import CONCERNING, HEADERS, NEUTRAL, REASSURING
from medflow.cohort.demo.signal import draw_labels, latent, sigmoid, task_oracle
from medflow.io.dicom_write import write_image

TEMPLATE = "ehr"
PREVALENCE = {"mortality": 0.12, "longstay": 0.35, "readmission": 0.15}
# EHR strongest (as the paper's Shapley analysis found), fusion of all three clearly above it.
D = {
    "mortality": {"ehr": 1.2, "cxr": 0.8, "notes": 0.9},
    "longstay": {"ehr": 1.0, "cxr": 0.7, "notes": 0.8},
    "readmission": {"ehr": 0.8, "cxr": 0.6, "notes": 0.7},
}
FUSED = {
    "ehr+cxr+notes": ["ehr", "cxr", "notes"],
    "ehr+cxr": ["ehr", "cxr"],
    "ehr+notes": ["ehr", "notes"],
    "cxr+notes": ["cxr", "notes"],
}
CENTRES = {"A": 0.55, "B": 0.45}
CXR_GAIN = {"A": 0.0, "B": 12.0}
MISSING = {"cxr": 0.15, "notes": 0.1}
DICOM_SHARE = 0.12  # of the X-rays, written as DICOM DX instead of PNG
WINDOW_HOURS = 48.0
# After the observation window (ingest must leave them out): the share of X-rays taken later (their
# manifest column cxr_hours says when) and of admissions with notes that also get a discharge note
# written later, one that names the outcome ("Patient expired."), so that any leak would show.
LATE = {"cxr": 0.05, "notes": 0.1}

# variable: (mean, between-admission sd, measurement sd, sampling interval range h, decimals,
#            {task: shift per unit latent}, clip range)
VARIABLES = {
    "heart_rate": (85, 8, 6, (1, 3), 0, {"readmission": 6.0}, (30, 200)),
    "sbp": (122, 10, 8, (1, 3), 0, {"mortality": -7.0}, (50, 220)),
    "dbp": (70, 7, 6, (1, 3), 0, {}, (25, 130)),
    "resp_rate": (18, 2, 2, (1, 3), 0, {"longstay": 2.0}, (6, 50)),
    "spo2": (96, 1.2, 1.0, (1, 3), 0, {"mortality": -1.5}, (70, 100)),
    "temperature": (37.0, 0.3, 0.2, (3, 5), 1, {"longstay": 0.35}, (34, 41.5)),
    "glucose": (130, 20, 15, (6, 12), 0, {"readmission": 18.0}, (40, 600)),
    "creatinine": (1.0, 0.2, 0.1, (12, 24), 2, {"longstay": 0.25}, (0.1, 12)),
    "wbc": (9.0, 2.0, 1.0, (12, 24), 1, {"longstay": 2.0}, (0.5, 60)),
    "hemoglobin": (12.5, 1.0, 0.5, (12, 24), 1, {"readmission": -0.9}, (4, 19)),
    "lactate": (1.6, 0.3, 0.3, (6, 12), 1, {"mortality": 0.8}, (0.2, 20)),
    "gcs_total": (14, 0.7, 0.5, (4, 8), 0, {"mortality": -1.2}, (3, 15)),
}
DETECTION_LIMIT = {"lactate": 0.5, "creatinine": 0.3}  # below it the lab reports "<limit"


def admission_events(rng: np.random.Generator, aid: str, shift: dict[str, float]) -> pd.DataFrame:
    """Irregularly sampled events of one admission; ``shift`` is the latent of each task (ehr)."""
    hours_all, names, values = [], [], []
    for var, (mean, between, meas, (lo, hi), _dec, effects, _clip) in VARIABLES.items():
        level = mean + between * rng.standard_normal() + sum(c * shift[t] for t, c in effects.items())
        steps = rng.uniform(lo, hi, int(WINDOW_HOURS / lo) + 2)
        hours = rng.uniform(0, hi) + np.concatenate([[0.0], np.cumsum(steps)])
        hours = hours[hours <= WINDOW_HOURS]
        # a few charted before admission (ED) or after the window: ingest must drop them
        extra = []
        if rng.random() < 0.05:
            extra.append(-rng.uniform(0.1, 6))
        if rng.random() < 0.08:
            extra.append(WINDOW_HOURS + rng.uniform(0.1, 24))
        hours = np.concatenate([hours, extra])
        hours_all.append(hours)
        names.extend([var] * len(hours))
        values.append(level + meas * rng.standard_normal(len(hours)))
    hours = np.concatenate(hours_all)
    frame = pd.DataFrame(
        {
            "admission_id": aid,
            "hours": np.round(hours, 2),
            "variable": names,
            "value": _format_values(rng, names, np.concatenate(values)),
        }
    )
    return frame.sort_values(["hours", "variable"], kind="stable")


def _format_values(rng: np.random.Generator, names: list[str], values: np.ndarray) -> list[str]:
    out = []
    for name, v in zip(names, values, strict=True):
        _m, _b, _s, _r, decimals, _e, (lo, hi) = VARIABLES[name]
        v = float(np.clip(v, lo, hi))
        limit = DETECTION_LIMIT.get(name)
        if limit is not None and v < limit:
            out.append(f"<{limit}")
        elif rng.random() < 0.004:
            out.append("see note")
        else:
            out.append(f"{round(v, decimals):.{decimals}f}")
    return out


def cxr_image(rng: np.random.Generator, size: int, s: dict[str, float], centre: str) -> np.ndarray:
    """AP chest X-ray (8-bit): opacities ~ s_mortality, effusion ~ s_longstay, heart size ~ s_readmission."""
    shape = (size, size)
    shift = rng.normal(0, 0.02 * size, 2)
    mid = (0.5 * size + shift[0], 0.5 * size + shift[1])
    img = np.full(shape, 15.0)
    img += 105 * shapes.soft_ellipse(shape, (mid[0] + 0.1 * size, mid[1]), (0.55 * size, 0.45 * size))
    lungs = np.zeros(shape)
    for side in (-1, 1):
        lungs = np.maximum(
            lungs,
            shapes.soft_ellipse(
                shape,
                (mid[0] - 0.02 * size, mid[1] + side * 0.19 * size),
                (0.3 * size, 0.14 * size),
                side * 0.08,
                edge=0.1,
            ),
        )
    rows = np.arange(size)[:, None]
    ribs = 12 * (np.sin(rows / size * 2 * np.pi * 6 + rng.uniform(0, 6)) > 0.6)
    opacity = np.clip(shapes.smooth_noise(rng, shape, size / 14), 0, None) * float(
        sigmoid(1.5 * (s["mortality"] - 0.8))
    )
    # effusion: the bottom of each lung is white up to a height that grows with s_longstay
    lung_bottom = mid[0] + 0.28 * size
    fluid_height = 0.3 * size * float(sigmoid(1.5 * (s["longstay"] - 0.7)))
    effusion = np.clip((rows - (lung_bottom - fluid_height)) / 2.0, 0, 1) * np.ones(shape)
    lung_signal = -75 + ribs + 45 * opacity + 70 * effusion
    img += lungs * lung_signal
    heart_w = 0.13 * size * float(np.clip(1 + 0.12 * s["readmission"], 0.6, 1.6))
    img += 70 * shapes.soft_ellipse(
        shape, (mid[0] + 0.12 * size, mid[1] + 0.03 * size), (0.11 * size, heart_w)
    )
    img += 60 * shapes.soft_ellipse(shape, (mid[0], mid[1]), (0.45 * size, 0.045 * size))  # spine/mediastinum
    return to_uint8(img + CXR_GAIN[centre] + rng.normal(0, 4, shape))


def note_text(rng: np.random.Generator, kind: str, s: dict[str, float]) -> str:
    sentences = [HEADERS[kind]]
    for _ in range(int(rng.integers(4, 8))):
        if rng.random() < 0.25:
            sentences.append(str(rng.choice(NEUTRAL)))
            continue
        task = str(rng.choice(list(CONCERNING)))
        p = float(sigmoid(1.2 * (s[task] - D[task]["notes"] / 2)))
        pool = CONCERNING[task] if rng.random() < p else REASSURING[task]
        sentences.append(str(rng.choice(pool)))
    return " ".join(sentences) + "\n"


def late_note(rng: np.random.Generator, died: bool) -> tuple[float, str]:
    """A discharge summary written after the window (hours since admission, text): it names the outcome."""
    hours = WINDOW_HOURS + 0.5 * int(rng.integers(4, 145))
    day = int(hours // 24) + 1
    if died:
        return hours, f"Discharge summary. Patient expired on hospital day {day} despite maximal support.\n"
    return hours, f"Discharge summary. Patient discharged on hospital day {day} in stable condition.\n"


def cxr_hours(rng: np.random.Generator) -> float:
    """When an X-ray was taken (hours since admission): mostly within the window, a few after it."""
    if rng.random() < LATE["cxr"]:
        return round(WINDOW_HOURS + float(rng.uniform(4, 96)), 1)
    return round(float(rng.uniform(0, WINDOW_HOURS)), 1)


def generate(out: Path, *, patients: int, image_size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # times and late files come from their own stream: the rest of the cohort is drawn as before
    late = np.random.default_rng([seed, 1])
    per_patient = rng.choice([1, 2, 3], size=patients, p=[0.6, 0.25, 0.15])
    centres = assign_centres(rng, patients, CENTRES)
    pids = [f"S{i + 1:04d}" for i in range(patients)]
    owner = np.repeat(np.arange(patients), per_patient)
    n = len(owner)
    aids = [f"A{i + 1:06d}" for i in range(n)]
    y = {t: draw_labels(rng, n, p) for t, p in PREVALENCE.items()}
    s = {t: {m: latent(rng, y[t], d) for m, d in D[t].items()} for t in D}
    fakes = [fake_patient(rng, str(c)) for c in centres]

    rows, events = [], []
    has = {m: rng.random(n) >= p for m, p in MISSING.items()}
    cxr_in_window = np.ones(n, dtype=bool)
    for i in progress(range(n), TEMPLATE, n):
        aid, p = aids[i], owner[i]
        centre = str(centres[p])
        events.append(admission_events(rng, aid, {t: s[t]["ehr"][i] for t in D}))
        cxr, taken = "", ""
        if has["cxr"][i]:
            taken = cxr_hours(late)
            cxr_in_window[i] = taken <= WINDOW_HOURS
            img = cxr_image(rng, image_size, {t: s[t]["cxr"][i] for t in D}, centre)
            if rng.random() < DICOM_SHARE:
                cxr = f"cxr/{aid}.dcm"
                mono1 = rng.random() < 0.35  # some detectors store inverted grey levels
                write_image(
                    out / cxr,
                    255 - img if mono1 else img,
                    modality="DX",
                    patient=fakes[p],
                    spacing=(430 / image_size,) * 2,
                    seed_key=("demo", TEMPLATE, seed, aid, "cxr"),
                    photometric="MONOCHROME1" if mono1 else "MONOCHROME2",
                )
            else:
                cxr = f"cxr/{aid}.png"
                write_png(out / cxr, img)
        notes = ""
        if has["notes"][i]:
            notes = f"notes/{aid}"
            k = int(rng.integers(1, 4))
            hours = np.sort(rng.choice(np.arange(1, 96) * 0.5, size=k, replace=False))
            (out / notes).mkdir(parents=True)
            for h in hours:
                kind = str(rng.choice(list(HEADERS)))
                text = note_text(rng, kind, {t: s[t]["notes"][i] for t in D})
                (out / notes / f"{h:05.1f}_{kind}.txt").write_text(text, encoding="utf-8")
            if late.random() < LATE["notes"]:
                h, text = late_note(late, bool(y["mortality"][i]))
                (out / notes / f"{h:05.1f}_discharge.txt").write_text(text, encoding="utf-8")
        rows.append(
            {
                "sample_id": aid,
                "patient_id": pids[p],
                "center": centre,
                **{t: int(y[t][i]) for t in D},
                "cxr": cxr,
                "cxr_hours": taken,
                "notes": notes,
            }
        )

    write_csv(pd.DataFrame(rows), out / "manifest.csv")
    write_csv(pd.concat(events, ignore_index=True), out / "events.csv")
    write_json(cohort_info(TEMPLATE, seed, "patient"), out / "cohort.json")
    tasks = {t: task_oracle(y[t], PREVALENCE[t], D[t], s[t], FUSED) for t in D}
    for task in tasks.values():
        task["missing"] = {m: round(float(1 - v.mean()), 4) for m, v in has.items()}
        # an X-ray taken after the window is left out at ingest: for the models it is missing too
        task["missing"]["cxr"] = round(float(1 - (has["cxr"] & cxr_in_window).mean()), 4)
        task["note"] = "oracle AUCs assume every modality present; missing cxr/notes lower what is reachable"
    write_json({"template": TEMPLATE, "tasks": tasks}, out / "oracle.json")
