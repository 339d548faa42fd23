"""gan-assets: monthly DICOM batches -> trained GAN -> audited FID -> synthetic images -> report."""

__version__ = "0.1.0"
