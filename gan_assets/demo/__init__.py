"""The demo: synthetic CT phantoms, a landing zone of real DICOM files, and the command line.

Not part of the DICOM core: the product ingests whatever the landing zone holds; this package
only fills one for a newcomer, the tests and the benchmarks.

- ``phantom``: one CT-like slice as a pydicom dataset, with planted identifying values.
- ``data``: a landing zone of such files over several months, plus a few bad ones.
- ``cli``: ``python -m gan_assets.demo data|run|dev`` and the ``gan-assets-demo`` script.
"""

from gan_assets.demo.cli import main

__all__ = ["main"]
