"""Write a folder of hostile and ordinary PDFs for ``bench_pdf_corpus.py``.

Run: ``python3 benchmarks/make_hostile_corpus.py OUTDIR``

Hostile files (hand-written bytes, tests/fix_hostile_pdf.py): a page-tree cycle,
a lying page count, an oversized image, a certificate-encrypted trailer, a huge
page (8400 pt: 876 MiB of RGB at 150 dpi, like ocrmypdf's hugemono.pdf), a page
of 20,000 tiny images and a page that renders for hours. Ordinary files
(tests/fix_pdf.py): text, images, an embedded font, a password-protected file,
a truncated file, a corrupt one and an empty one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fix_hostile_pdf as hostile
import fix_pdf as ordinary

FILES = {
    "hostile-cycle.pdf": hostile.page_tree_cycle,
    "hostile-lying-count.pdf": hostile.lying_page_count,
    "hostile-oversized-image.pdf": hostile.oversized_image,
    "hostile-certificate.pdf": hostile.certificate_encrypted,
    "hostile-huge-page.pdf": hostile.huge_page,
    "hostile-tiny-images.pdf": hostile.many_tiny_images,
    "hostile-slow-page.pdf": hostile.slow_page,
    "text.pdf": lambda: ordinary.text_pdf(5),
    "images.pdf": lambda: ordinary.image_pdf(3, side=800),
    "font.pdf": lambda: ordinary.font_pdf(2),
    "encrypted.pdf": ordinary.encrypted_pdf,
    "truncated.pdf": ordinary.truncated_pdf,
    "corrupt.pdf": ordinary.corrupt_pdf,
    "empty.pdf": lambda: b"",
}


def write_corpus(folder: Path) -> list[Path]:
    """Write every file of :data:`FILES` into ``folder`` and return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, make in FILES.items():
        path = folder / name
        path.write_bytes(make())
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    for path in write_corpus(args.folder):
        print(f"{path.stat().st_size:>10,} {path}")


if __name__ == "__main__":
    main()
