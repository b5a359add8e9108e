"""PDF fixtures: documents the tests generate with PyMuPDF, never checked-in files.

The generators are plain functions too, so the fresh-process memory tests and
``benchmarks/bench_pdf.py`` build the same documents.
"""

from __future__ import annotations

from pathlib import Path

import pytest

try:
    import pymupdf
except ImportError:  # the pdf extra is missing: pdf_dir skips
    pymupdf = None

PASSWORD = "s3cret-pw"
LETTER = (612, 792)


def text_pdf(pages: int, *, lines: int = 40) -> bytes:
    """Pages of plain text in a base-14 font (nothing embedded)."""
    doc = pymupdf.open()
    for number in range(pages):
        page = doc.new_page(width=LETTER[0], height=LETTER[1])
        text = "\n".join(
            f"page {number} line {line}: the quick brown fox jumps" for line in range(lines)
        )
        page.insert_text((50, 50), text, fontsize=10)
    data = doc.tobytes(garbage=3, deflate=True)
    doc.close()
    return data


def _image(seed: int, side: int) -> pymupdf.Pixmap:
    """A ``side`` x ``side`` RGB image unique to ``seed``; it compresses well but decodes big."""
    stripes = 16
    rows = []
    for stripe in range(stripes):
        shade = (seed * 37 + stripe * 53) % 256
        color = bytes((shade, (shade * 7 + seed) % 256, (255 - shade + stripe) % 256))
        height = (
            side // stripes if stripe < stripes - 1 else side - (stripes - 1) * (side // stripes)
        )
        rows.append(color * side * height)
    return pymupdf.Pixmap(pymupdf.csRGB, side, side, b"".join(rows), False)


def image_pdf(pages: int, *, side: int = 1600, shared: bool = False) -> bytes:
    """Pages each showing a large embedded image: distinct per page, or one shared by all."""
    doc = pymupdf.open()
    xref = 0
    for number in range(pages):
        page = doc.new_page(width=LETTER[0], height=LETTER[1])
        rect = pymupdf.Rect(36, 36, LETTER[0] - 36, LETTER[1] - 36)
        if shared and xref:
            page.insert_image(rect, xref=xref)
        else:
            xref = page.insert_image(rect, pixmap=_image(number, side))
        page.insert_text((40, 30), f"image page {number}", fontsize=9)
    data = doc.tobytes(garbage=3, deflate=True)
    doc.close()
    return data


def font_pdf(pages: int) -> bytes:
    """Text pages in an embedded font (MuPDF's built-in Times, embedded as a font file)."""
    doc = pymupdf.open()
    buffer = pymupdf.Font("tiro").buffer
    for number in range(pages):
        page = doc.new_page(width=LETTER[0], height=LETTER[1])
        page.insert_font(fontname="F0", fontbuffer=buffer)
        page.insert_text((50, 60), f"embedded font page {number}", fontname="F0", fontsize=14)
    data = doc.tobytes(garbage=3, deflate=True)
    doc.close()
    return data


def encrypted_pdf(pages: int = 2) -> bytes:
    """Text pages encrypted with AES-256 and the user password :data:`PASSWORD`."""
    doc = pymupdf.open(stream=text_pdf(pages), filetype="pdf")
    data = doc.tobytes(
        encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw=PASSWORD, owner_pw=PASSWORD + "-owner"
    )
    doc.close()
    return data


def truncated_pdf() -> bytes:
    """A valid file cut after its last object (no xref): MuPDF repairs it silently on open."""
    data = text_pdf(3)
    return data[: data.rindex(b"endobj") + len(b"endobj")]


def corrupt_pdf() -> bytes:
    """A PDF header followed by bytes that are not a PDF at all."""
    return b"%PDF-1.7\n" + bytes(range(256)) * 4


def raw_pdf(objects: list[bytes], *, trailer: bytes = b"") -> bytes:
    """A PDF written byte by byte: ``objects`` are numbered from 1 and object 1 is the catalog.

    ``b"stream:" + data`` becomes a stream object of ``data`` with its /Length.
    """
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        if body.startswith(b"stream:"):
            data = body[len(b"stream:") :]
            body = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(data), data)
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R %s >>\n" % (len(objects) + 1, trailer)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


CATALOG = b"<< /Type /Catalog /Pages 2 0 R >>"
HELLO = b"stream:BT /F1 12 Tf 20 100 Td (hello) Tj ET"
FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def _page(content: int, size: int = 200) -> bytes:
    return (
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents %d 0 R "
        % (
            size,
            size,
            content,
        )
        + b"/Resources << /Font << /F1 5 0 R >> >> >>"
    )


def page_tree_cycle_pdf() -> bytes:
    """Three pages claimed; the second kid is a /Pages node whose only kid is the root."""
    return raw_pdf(
        [
            CATALOG,
            b"<< /Type /Pages /Kids [3 0 R 6 0 R] /Count 3 >>",
            _page(4),
            HELLO,
            FONT,
            b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 2 >>",
        ]
    )


def bad_page_count_pdf() -> bytes:
    """One page under a root whose /Count is negative: MuPDF opens it, then cannot count."""
    return raw_pdf([CATALOG, b"<< /Type /Pages /Kids [3 0 R] /Count -1 >>", _page(4), HELLO, FONT])


def lying_page_count_pdf() -> bytes:
    """One page under a root that claims five: pages 1-4 cannot be loaded."""
    return raw_pdf([CATALOG, b"<< /Type /Pages /Kids [3 0 R] /Count 5 >>", _page(4), HELLO, FONT])


def certificate_pdf() -> bytes:
    """A trailer encrypted for certificate holders (Adobe.PubSec), which MuPDF cannot open."""
    encrypt = (
        b"<< /Filter /Adobe.PubSec /SubFilter /adbe.pkcs7.s5 /V 4 /R 4 /Length 128 "
        b"/Recipients [<3082>] >>"
    )
    file_id = b"<00112233445566778899aabbccddeeff>"
    return raw_pdf(
        [CATALOG, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>", _page(4), HELLO, FONT, encrypt],
        trailer=b"/Encrypt 6 0 R /ID [%s %s]" % (file_id, file_id),
    )


def late_repair_pdf() -> bytes:
    """Two pages that open cleanly; page 1's content sits at a wrong xref offset.

    MuPDF repairs the file only when page 1 is read, so ``is_repaired`` turns
    true after opening.
    """
    data = raw_pdf(
        [
            CATALOG,
            b"<< /Type /Pages /Kids [3 0 R 6 0 R] /Count 2 >>",
            _page(4),
            HELLO,
            FONT,
            _page(7),
            HELLO,
        ]
    )
    start = data.index(b"xref\n")
    lines = data[start:].split(b"\n")
    lines[2 + 7] = b"%010d 00000 n " % 5  # object 7 "starts" inside the header
    return data[:start] + b"\n".join(lines)


def poster_pdf(*, side: int = 14400) -> bytes:
    """One ``side`` x ``side`` pt page (200 in): 30,000 pixels a side at 150 dpi."""
    return raw_pdf(
        [CATALOG, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>", _page(4, side), HELLO, FONT]
    )


def zero_size_text_pdf() -> bytes:
    """Text in which "cd" is set at font size 0, in its own blocks, and a block of only such
    characters: MuPDF gives them empty boxes."""
    content = (
        b"stream:BT /F1 12 Tf 20 100 Td (ab) Tj /F1 0 Tf (cd) Tj /F1 12 Tf (ef) Tj ET "
        b"BT /F1 0 Tf 20 150 Td (gh) Tj ET BT /F1 12 Tf 20 50 Td (xy) Tj ET"
    )
    return raw_pdf([CATALOG, b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>", _page(4), content, FONT])


@pytest.fixture(scope="session")
def pdf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding one file of each kind, written once per session."""
    if pymupdf is None:
        pytest.skip("the pdf extra (PyMuPDF) is not installed")
    root = tmp_path_factory.mktemp("pdfs")
    files = {
        "text.pdf": text_pdf(3),
        "images.pdf": image_pdf(3, side=800),
        "shared.pdf": image_pdf(3, side=800, shared=True),
        "font.pdf": font_pdf(2),
        "encrypted.pdf": encrypted_pdf(),
        "truncated.pdf": truncated_pdf(),
        "corrupt.pdf": corrupt_pdf(),
        "empty.pdf": b"",
        "notes.txt": b"a plain text file, not a PDF\n",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root
