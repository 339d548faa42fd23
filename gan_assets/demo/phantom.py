"""CT-like phantoms and the DICOM datasets that carry them (plain numpy + pydicom).

A phantom is a body ellipse of soft tissue in air, two lungs, a spine, a few organs and
vessels with contrast, plus scanner-like noise, all in Hounsfield units. The dataset holds it
as 16-bit stored values with RescaleSlope/RescaleIntercept and a display window, and carries
made-up but realistic identifying header fields. Every identifying value contains
``PHI_MARKER`` (or is listed by :func:`phi_values`) so privacy tests can scan for it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

# Distinctive and unlikely to appear by chance in any artifact, log or metadata.
PHI_MARKER = "ZQXPHI"

# (center_x, center_y, semi_axis_x, semi_axis_y) as fractions of the image side, and HU.
_LUNG_HU = -850.0
_SOFT_TISSUE_HU = 40.0
_FAT_HU = -100.0
_BONE_HU = 700.0
_AIR_HU = -1000.0


@dataclass(frozen=True)
class PatientIdentity:
    """Made-up identifying values of one demo patient (all deliberately fake)."""

    name: str
    patient_id: str
    birth_date: str
    sex: str
    accession: str
    institution: str
    referring_physician: str


def make_identity(patient_index: int, rng: np.random.Generator) -> PatientIdentity:
    """A fake patient whose every identifying string carries PHI_MARKER."""
    given = ["Quentin", "Xaviera", "Zebulon", "Ysolde", "Wystan", "Oriel", "Peregrine", "Saoirse"]
    birth = dt.date(1930, 1, 1) + dt.timedelta(days=int(rng.integers(0, 40 * 365)))
    return PatientIdentity(
        name=f"{PHI_MARKER}{patient_index:04d}^{given[patient_index % len(given)]}",
        patient_id=f"{PHI_MARKER}-PID-{patient_index:06d}",
        birth_date=birth.strftime("%Y%m%d"),
        sex="F" if patient_index % 2 else "M",
        accession=f"{PHI_MARKER}ACC{patient_index:07d}",
        institution=f"{PHI_MARKER} Saint Nowhere General Hospital",
        referring_physician=f"{PHI_MARKER}DOC^Hypothetical",
    )


def _paint_ellipse(image: np.ndarray, value: float, cy: float, cx: float, ry: float, rx: float,
                   angle: float = 0.0, over: tuple[float, float] | None = None) -> None:
    """Set pixels inside an ellipse (centre and semi-axes as fractions of the side) to value.

    Only the ellipse's bounding box is evaluated, which keeps a 512 x 512 phantom cheap.
    ``over = (low, high)`` paints only pixels whose current value lies strictly between them.
    """
    size = image.shape[0]
    reach = max(ry, rx)
    y0, y1 = max(int((cy - reach) * size) - 1, 0), min(int((cy + reach) * size) + 2, size)
    x0, x1 = max(int((cx - reach) * size) - 1, 0), min(int((cx + reach) * size) + 2, size)
    if y0 >= y1 or x0 >= x1:
        return
    yy = ((np.arange(y0, y1, dtype=np.float32) + 0.5) / size)[:, None] - cy
    xx = ((np.arange(x0, x1, dtype=np.float32) + 0.5) / size)[None, :] - cx
    cos, sin = np.cos(angle), np.sin(angle)
    u = (xx * cos + yy * sin) / rx
    v = (-xx * sin + yy * cos) / ry
    mask = u * u + v * v <= 1.0
    window = image[y0:y1, x0:x1]
    if over is not None:
        mask &= (window > over[0]) & (window < over[1])
    window[mask] = value


def ct_phantom(size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size float32 axial-slice-like phantom in HU (air -1000 .. bone ~ +1000)."""
    image = np.full((size, size), _AIR_HU, dtype=np.float32)
    jitter = lambda scale: float(rng.normal(0.0, scale))  # noqa: E731 - a tiny local helper

    body_rx, body_ry = 0.40 + jitter(0.02), 0.30 + jitter(0.02)
    cy, cx = 0.52 + jitter(0.01), 0.50 + jitter(0.01)
    _paint_ellipse(image, _FAT_HU, cy, cx, body_ry, body_rx)
    _paint_ellipse(image, _SOFT_TISSUE_HU, cy, cx, body_ry - 0.03, body_rx - 0.03)
    for side in (-1.0, 1.0):  # lungs, only over soft tissue
        _paint_ellipse(image, _LUNG_HU + jitter(20.0), cy - 0.02 + jitter(0.01), cx + side * (0.17 + jitter(0.01)),
                       0.20 + jitter(0.015), 0.12 + jitter(0.01), angle=side * jitter(0.15), over=(0.0, 100.0))
    _paint_ellipse(image, 45.0 + jitter(5.0), cy + 0.02, cx + 0.04 + jitter(0.01), 0.10 + jitter(0.01),
                   0.09 + jitter(0.01), angle=jitter(0.3))
    _paint_ellipse(image, 180.0 + jitter(40.0), cy + 0.10, cx - 0.03, 0.025, 0.025)  # aorta with contrast
    _paint_ellipse(image, _BONE_HU + jitter(60.0), cy + 0.21, cx, 0.045, 0.04)  # vertebral body
    _paint_ellipse(image, 20.0, cy + 0.21, cx, 0.015, 0.015)  # spinal canal
    for _ in range(int(rng.integers(3, 9))):  # vessels and nodules in the lungs
        side = 1.0 if rng.random() < 0.5 else -1.0
        radius = float(rng.uniform(0.004, 0.015))
        _paint_ellipse(image, float(rng.uniform(-50.0, 120.0)), cy + jitter(0.08),
                       cx + side * (0.17 + jitter(0.05)), radius, radius, over=(-950.0, -700.0))
    for side in (-1.0, 1.0):  # ribs: small bright ellipses along the body outline
        for k in range(3):
            angle = 0.5 + 0.6 * k
            ry, rx = body_ry - 0.045, body_rx - 0.045
            _paint_ellipse(image, 500.0 + jitter(80.0), cy - ry * np.cos(angle) * 0.9,
                           cx + side * rx * np.sin(angle), 0.012, 0.02)
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(12.0)  # quantum noise
    return image


@dataclass(frozen=True)
class SliceSpec:
    """Everything that decides one demo file's content (deterministic given these values)."""

    seed: int
    patient_index: int
    study_date: dt.date
    instance_number: int
    size: int
    signed: bool
    lung_window: bool


def _uid(seed: int, *parts: object) -> str:
    # Deterministic UIDs (hash of the seed and the file's coordinates) keep the demo reproducible.
    return generate_uid(entropy_srcs=[f"gan-assets-demo:{seed}", *(str(p) for p in parts)])


def ct_dataset(spec: SliceSpec) -> Dataset:
    """A CT Image Storage dataset holding one phantom slice, ready for ``save_as``."""
    rng = np.random.default_rng([spec.seed, spec.patient_index, spec.study_date.toordinal(), spec.instance_number])
    identity = make_identity(spec.patient_index, np.random.default_rng([spec.seed, spec.patient_index]))
    hu = ct_phantom(spec.size, rng)
    # Two stored-value conventions seen in practice: unsigned with intercept -1024, or signed HU.
    if spec.signed:
        slope, intercept = 1.0, 0.0
        stored = np.clip(np.rint(hu), -2048, 3071).astype(np.int16)
    else:
        slope, intercept = 1.0, -1024.0
        stored = np.clip(np.rint(hu - intercept), 0, 4095).astype(np.uint16)

    study_uid = _uid(spec.seed, "study", spec.patient_index, spec.study_date)
    series_uid = _uid(spec.seed, "series", spec.patient_index, spec.study_date)
    sop_uid = _uid(spec.seed, "sop", spec.patient_index, spec.study_date, spec.instance_number)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    date = spec.study_date.strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = f"{8 + spec.patient_index % 9:02d}{spec.instance_number % 60:02d}00"
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = ds.StudyTime
    ds.AccessionNumber = identity.accession
    ds.Modality = "CT"
    ds.Manufacturer = "GAN-ASSETS DEMO PHANTOM"
    ds.InstitutionName = identity.institution
    ds.InstitutionAddress = f"{PHI_MARKER} 1 Imaginary Lane, Nowhere"
    ds.ReferringPhysicianName = identity.referring_physician
    ds.OperatorsName = f"{PHI_MARKER}OPERATOR^Fictional"
    ds.StationName = f"{PHI_MARKER}CT01"
    ds.StudyDescription = "CT CHEST (SYNTHETIC DEMO)"
    ds.SeriesDescription = "AXIAL 5MM"
    ds.PatientName = identity.name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = identity.sex
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "5.0"
    ds.KVP = "120"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"{PHI_MARKER}S{spec.patient_index:04d}"
    ds.SeriesNumber = 2
    ds.InstanceNumber = spec.instance_number
    ds.ImagePositionPatient = [-175.0, -175.0, float(-5 * spec.instance_number)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.FrameOfReferenceUID = _uid(spec.seed, "for", spec.patient_index, spec.study_date)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = spec.size
    spacing = f"{350.0 / spec.size:.6f}"
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated = 16
    ds.BitsStored = 12 if not spec.signed else 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if spec.signed else 0
    ds.BurnedInAnnotation = "NO"
    if spec.lung_window:
        ds.WindowCenter, ds.WindowWidth = "-600", "1500"
    else:
        ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleType = "HU"
    ds.PixelData = stored.tobytes()
    return ds


def phi_values(ds: Dataset) -> list[str]:
    """The identifying strings of a dataset that must never leave ingest (for privacy tests)."""
    values = []
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
                    "ReferringPhysicianName", "OperatorsName", "StationName", "StudyID",
                    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
        value = ds.get(keyword)
        if value not in (None, ""):
            values.append(str(value))
    return values
