"""Plain-Python DICOM cores (no Dagster): header scan, decoding and preprocessing."""
