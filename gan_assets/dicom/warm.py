"""Imported by the ingest pool's fork server: load every decoder once so forked workers share it.

pydicom imports its pixel plugins (Pillow, pylibjpeg, openjpeg, libjpeg) lazily on first use,
which costs a second or more per fresh process; asking each decoder whether it is available
imports them here, once, before any worker is forked.
"""

from __future__ import annotations

import gan_assets.dicom.batch  # noqa: F401 - the worker functions and their imports


def warm_up() -> None:
    import pydicom.uid
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID, PrivateTransferSyntaxes

    syntaxes = {v for k, v in vars(pydicom.uid).items() if isinstance(v, UID) and v.is_transfer_syntax}
    for uid in sorted(syntaxes - set(PrivateTransferSyntaxes)):
        try:
            get_decoder(uid).is_available
        except Exception:  # an unusable plugin stays unusable; the decode path reports it
            continue


warm_up()
