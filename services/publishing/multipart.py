"""The upload form of a release: a spooled ``multipart/form-data`` body split into its text
fields and its ``zip`` part (copied to a file, never held in memory)."""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path

from services.publishing.body_limits import CHUNK, MAX_DOCUMENT_SIZE
from services.publishing.errors import BadRequestError

_MAX_PART_HEADERS = 16 * 1024


@dataclass(frozen=True)
class UploadForm:
    """A multipart/form-data body: its text fields, and the ``zip`` part copied to a file."""

    fields: dict[str, str]
    zip_path: Path | None


def form_boundary(content_type: str) -> str:
    """The boundary of a ``multipart/form-data`` Content-Type; raises ``BadRequestError``."""
    header = Message()
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 70 or not boundary.isascii():
        raise BadRequestError(
            "malformed-request",
            "the multipart/form-data Content-Type has no valid boundary parameter",
        )
    return boundary


def read_form(body: Path, boundary: str, zip_dest: Path) -> UploadForm:
    """Split a spooled multipart/form-data body; the ``zip`` part is copied to ``zip_dest``.

    Text fields are UTF-8, at most ``MAX_DOCUMENT_SIZE`` bytes each. Raises
    ``BadRequestError`` for a body that is not such a form, a part without a
    name, a field given twice or a text field that is not UTF-8.
    """
    delimiter = b"--" + boundary.encode("ascii")
    fields: dict[str, str] = {}
    zip_path: Path | None = None

    def bad(problem: str) -> BadRequestError:
        return BadRequestError("malformed-request", f"the multipart form {problem}")

    if body.stat().st_size == 0:
        raise bad("is empty")
    with body.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[: len(delimiter)] == delimiter:
            position = 0
        else:
            found = data.find(b"\r\n" + delimiter)
            if found < 0:
                raise bad(f"never uses its boundary {boundary!r}")
            position = found + 2
        while True:
            position += len(delimiter)
            marker = data[position : position + 2]
            if marker == b"--":
                break
            if marker != b"\r\n":
                raise bad("has a boundary line not followed by CRLF")
            headers_start = position + 2
            headers_end = data.find(b"\r\n\r\n", headers_start, headers_start + _MAX_PART_HEADERS)
            if headers_end < 0:
                raise bad("has a part whose headers do not end (or exceed 16 KiB)")
            headers = BytesHeaderParser().parsebytes(data[headers_start : headers_end + 2])
            name = headers.get_param("name", header="content-disposition")
            if headers.get_content_disposition() != "form-data" or not isinstance(name, str):
                raise bad("has a part without Content-Disposition: form-data; name=...")
            content_start = headers_end + 4
            content_end = data.find(b"\r\n" + delimiter, content_start)
            if content_end < 0:
                raise bad("is truncated: its closing boundary is missing")
            if name in fields or (name == "zip" and zip_path is not None):
                raise bad(f"gives the field {name!r} twice")
            if name == "zip":
                zip_path = zip_dest
                with zip_dest.open("wb") as out:
                    for start in range(content_start, content_end, CHUNK):
                        out.write(data[start : min(start + CHUNK, content_end)])
            else:
                if content_end - content_start > MAX_DOCUMENT_SIZE:
                    raise bad(f"has a field {name!r} over {MAX_DOCUMENT_SIZE} bytes")
                try:
                    fields[name] = data[content_start:content_end].decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise bad(f"has a field {name!r} that is not UTF-8") from exc
            position = content_end + 2
    return UploadForm(fields, zip_path)
