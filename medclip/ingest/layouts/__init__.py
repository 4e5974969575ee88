"""Archive layouts, registered by name in :data:`LAYOUTS` as each module is imported here.

A new layout is a module beside these with a ``@LAYOUTS.register("name")`` scan function returning an
:class:`~medclip.ingest.archive.ArchiveScan`, imported here.
"""

from medclip.ingest.archive import LAYOUTS
from medclip.ingest.layouts import csv_table, dicom, dicom_ct, public

__all__ = ["LAYOUTS", "csv_table", "dicom", "dicom_ct", "public"]
