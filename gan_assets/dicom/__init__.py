"""Plain-Python DICOM cores (no Dagster): demo data, header scan, decoding and preprocessing."""
