"""Store stage: file names, JPEG encoding, atomic per-video writers (directory or zip) and their readers.

A video's output is written under a hidden sibling temporary name and moved into place only once complete,
with meta.json as the last file written: a directory or zip without a valid meta.json is never finished.

One module per seam: naming (file names and the two forms' paths), meta (meta.json's fields), jpeg (the codec),
atomic (temporaries, per-output locks, atomic replacement), readers, writers, outputs (what is at an output
path, and the walk that finds a tree's outputs), location (a local path or an object store's URL), objects (the
object-store writer, readers and listings). A new storage target is a reader and a writer beside these.
"""
from .atomic import (LOCK_SUFFIX, TEMP_MARKER, is_temporary, lock_path, output_lock, remove_temps_of_outputs,
                     temp_path, write_file_atomic)
from .jpeg import codes_from_images, decode_jpeg, encode_flow_codes, encode_jpeg
from .location import (ObjectStore, StorageOptions, as_location, is_url, object_path, parse_location,
                       parse_storage_options, require_local)
from .meta import META_FORMAT, META_NAME, check_meta, meta_field, recorded_settings
from .naming import PACK_SUFFIX, Naming, other_pack, output_name, output_path, template_pattern
from .outputs import (FINISHED, TEMPORARY, UNFINISHED, UNREADABLE, FoundOutput, find_outputs, finished_meta,
                      inspect_output, not_ours_message)
from .readers import (DirectoryReader, OutputReader, ZipReader, flow_pair_names, open_output, read_flow_codes,
                      read_flow_pair)
from .writers import DirectoryWriter, OutputWriter, ZipWriter, open_writer

__all__ = [
    "DirectoryReader", "DirectoryWriter", "ObjectStore", "as_location", "object_path", "StorageOptions", "parse_location", "parse_storage_options", "FINISHED", "FoundOutput", "LOCK_SUFFIX", "META_FORMAT", "META_NAME",
    "Naming", "OutputReader", "OutputWriter", "PACK_SUFFIX", "TEMPORARY", "TEMP_MARKER", "UNFINISHED", "UNREADABLE",
    "ZipReader", "ZipWriter", "check_meta", "codes_from_images", "decode_jpeg", "encode_flow_codes", "encode_jpeg",
    "find_outputs", "finished_meta", "flow_pair_names", "inspect_output", "is_temporary", "is_url", "lock_path", "meta_field",
    "not_ours_message", "open_output", "open_writer", "other_pack", "output_lock", "output_name", "output_path",
    "read_flow_codes", "read_flow_pair", "recorded_settings", "remove_temps_of_outputs", "require_local", "temp_path",
    "template_pattern", "write_file_atomic",
]
