"""Every real DICOM test file (pydicom's own and the pydicom-data package), offline.

Single-frame files go through kind ``image``, multi-frame files through kind ``volume``. Whatever
pydicom itself decodes (``dcmread(f).pixel_array``) must be converted; everything else must be a
problem row with a reason. Files over 20 MB would be skipped to keep the test fast (none is today).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_files

from medflow.ingest import ingest_modality
from medflow.problems import read_problems

MAX_BYTES = 20_000_000


def _expectation(path: str) -> tuple[bool, bool]:
    """(pydicom decodes it, it is multi-frame)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            frames = int(ds.get("NumberOfFrames", 1) or 1)
            ds.pixel_array  # noqa: B018
        return True, frames > 1
    except Exception:
        try:
            frames = int(pydicom.dcmread(path, stop_before_pixels=True).get("NumberOfFrames", 1) or 1)
        except Exception:
            frames = 1
        return False, frames > 1


@pytest.fixture(scope="module")
def real_files():
    files = sorted({str(Path(f).resolve()) for f in get_testdata_files()})
    files = [f for f in files if Path(f).is_file() and Path(f).stat().st_size <= MAX_BYTES]
    assert len(files) > 200, "pydicom test files + pydicom-data expected"
    return {f: _expectation(f) for f in files}


@pytest.mark.parametrize("kind", ["image", "volume"])
def test_every_decodable_real_file_is_converted(tmp_path, real_files, kind):
    chosen = [f for f, (_, multi) in real_files.items() if multi == (kind == "volume")]
    ids = [f"f{i:03d}" for i in range(len(chosen))]
    man = pd.DataFrame({"sample_id": ids, "patient_id": ids, "center": "A", "x": chosen})
    spec = {"kind": "image", "size": [32, 32]} if kind == "image" else {"kind": "volume", "size": [4, 16, 16]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = ingest_modality(
            man, tmp_path, "x", spec, tmp_path / "x.h5", tmp_path / "x.problems.csv", threads=2, progress=False
        )
    problems = {p.sample_id: p for p in read_problems(tmp_path / "x.problems.csv")}
    with h5py.File(tmp_path / "x.h5") as f:
        converted = set(f["sample_id"].asstr()[:])
        assert np.all(np.isfinite(f["images"][:]))
    wrong = []
    for sid, path in zip(ids, chosen, strict=True):
        decodable = real_files[path][0]
        if decodable and sid not in converted:
            wrong.append(f"{Path(path).name}: pydicom decodes it but ingest said {problems.get(sid)}")
        if not decodable and (sid not in problems or not problems[sid].reason.strip()):
            wrong.append(f"{Path(path).name}: pydicom cannot decode it but it is not a problem row")
    assert not wrong, "\n".join(wrong)
    assert summary.n_ok + summary.n_problems == len(chosen)
    n_dec = sum(real_files[p][0] for p in chosen)
    print(f"{kind}: {len(chosen)} files, {n_dec} decodable by pydicom, {summary.n_ok} converted, {summary.n_problems} problems")
