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
