"""Sources: read folders of documents into records and group them into batches."""

from pz_dagster.sources.batches import Batch, FileRef, changed_files, make_batches, scan_folder
from pz_dagster.sources.files import SUPPORTED_SUFFIXES, read_file

__all__ = [
    "Batch",
    "changed_files",
    "FileRef",
    "SUPPORTED_SUFFIXES",
    "make_batches",
    "read_file",
    "scan_folder",
]
