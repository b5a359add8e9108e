"""Hostile PDFs written by hand: the shapes that break renderers, as small generated files.

Plain functions returning bytes, shared by tests/test_pdf_isolated.py and
``benchmarks/make_hostile_corpus.py``. Each file is a valid PDF skeleton (header,
objects, a correct xref table, trailer) whose content is hostile.
"""

from __future__ import annotations

import zlib

#: A page this large (points) renders to 17500 x 17500 RGB pixels at 150 dpi: 876 MiB.
HUGE_SIDE = 8400


def assemble(objects: list[bytes], *, root: int = 1, trailer: bytes = b"") -> bytes:
    """A PDF file of ``objects`` (object ``i + 1`` is ``objects[i]``) with a correct xref."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R %s>>\n" % (len(objects) + 1, root, trailer)
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


def stream(data: bytes, entries: bytes = b"", *, deflate: bool = True) -> bytes:
    """A stream object's body: its dictionary (``entries``) and ``data``, deflated by default."""
    if deflate:
        data = zlib.compress(data)
        entries += b" /Filter /FlateDecode"
    return b"<< /Length %d %s >>\nstream\n" % (len(data), entries) + data + b"\nendstream"


_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def _text_page(parent: int, content: int, font: int, side: tuple[int, int] = (612, 792)) -> bytes:
    return (
        b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 %d %d] /Contents %d 0 R "
        % (
            parent,
            *side,
            content,
        )
        + b"/Resources << /Font << /F1 %d 0 R >> >> >>" % font
    )


def _text(line: str) -> bytes:
    return stream(b"BT /F1 12 Tf 72 700 Td (" + line.encode() + b") Tj ET")


def _two_text_pages(kids: bytes, count: int, label: str) -> bytes:
    """Two text pages under a page tree whose ``/Kids`` and ``/Count`` are given."""
    return assemble(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, count),
            _text_page(2, 5, 7),
            _text_page(2, 6, 7),
            _text(f"{label} page 0"),
            _text(f"{label} page 1"),
            _FONT,
        ]
    )


def page_tree_cycle() -> bytes:
    """Two good pages, then a Kids entry that points back at the root of the page tree."""
    return _two_text_pages(b"3 0 R 4 0 R 2 0 R", 3, "cycle")


def lying_page_count() -> bytes:
    """A page tree that claims 1,000,000 pages and holds two."""
    return _two_text_pages(b"3 0 R 4 0 R", 1000000, "liar")


def oversized_image() -> bytes:
    """A page drawing a 1,000,000 x 1,000,000 image whose stream holds a few bytes."""
    image = stream(
        b"\x00" * 64,
        b"/Type /XObject /Subtype /Image /Width 1000000 /Height 1000000"
        b" /ColorSpace /DeviceGray /BitsPerComponent 8",
    )
    return assemble(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
            b" /Resources << /XObject << /Im0 5 0 R >> >> >>",
            stream(b"q 500 0 0 700 50 50 cm /Im0 Do Q"),
            image,
        ]
    )


def certificate_encrypted() -> bytes:
    """A trailer that names public-key (certificate) encryption, which MuPDF cannot open."""
    return assemble(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            _text_page(2, 4, 5),
            _text("sealed"),
            _FONT,
            b"<< /Filter /Adobe.PubSec /SubFilter /adbe.pkcs7.s5 /V 4 /R 4 /Length 128"
            b" /Recipients [<3082>] /CF << /DefaultCryptFilter << /CFM /AESV2"
            b" /Recipients [<3082>] >> >> /StmF /DefaultCryptFilter /StrF /DefaultCryptFilter >>",
        ],
        trailer=b"/Encrypt 6 0 R /ID [<0123456789abcdef0123456789abcdef>"
        b" <0123456789abcdef0123456789abcdef>] ",
    )


def huge_page(side: int = HUGE_SIDE) -> bytes:
    """One ``side`` x ``side`` point page of text: a memory bomb when rendered (hugemono-like)."""
    return assemble(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            _text_page(2, 4, 5, (side, side)),
            _text("a very large page"),
            _FONT,
        ]
    )


def many_tiny_images(count: int = 20000, distinct: int = 500) -> bytes:
    """One page drawing ``count`` 2x2 images, ``distinct`` different image objects among them."""
    first_image = 5
    names = b" ".join(b"/Im%d %d 0 R" % (i, first_image + i) for i in range(distinct))
    draws = b"".join(
        b"q 3 0 0 3 %d %d cm /Im%d Do Q\n"
        % (20 + (i % 190) * 3, 20 + (i // 190) * 3 % 750, i % distinct)
        for i in range(count)
    )
    images = [
        stream(
            bytes((i % 256, (i * 7) % 256, (i * 13) % 256)) * 4,
            b"/Type /XObject /Subtype /Image /Width 2 /Height 2"
            b" /ColorSpace /DeviceRGB /BitsPerComponent 8",
        )
        for i in range(distinct)
    ]
    return assemble(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
            b" /Resources << /XObject << " + names + b" >> >> >>",
            stream(draws),
            *images,
        ]
    )


def slow_page(levels: int = 9, fanout: int = 10) -> bytes:
    """A good page 0, then a page of nested forms, each drawing the next ``fanout`` times.

    ``fanout ** levels`` tiny paths (10**9 by default): it renders for hours, a hang in practice.
    """
    first_form = 8
    forms = []
    for level in range(levels):
        if level == levels - 1:
            content = b"0 0 1 1 re f"
            resources = b""
        else:
            content = b"".join(b"/F%d Do " % (level + 1) for _ in range(fanout))
            resources = b"/Resources << /XObject << /F%d %d 0 R >> >>" % (
                level + 1,
                first_form + level + 1,
            )
        forms.append(
            stream(content, b"/Type /XObject /Subtype /Form /BBox [0 0 612 792] " + resources)
        )
    return assemble(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R 4 0 R] /Count 2 >>",
            _text_page(2, 5, 7),
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 6 0 R"
            b" /Resources << /XObject << /F0 %d 0 R >> >> >>" % first_form,
            _text("quick page 0"),
            stream(b"/F0 Do"),
            _FONT,
            *forms,
        ]
    )
