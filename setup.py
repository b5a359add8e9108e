"""The optional C accelerator; everything else is declared in pyproject.toml.

``optional=True``: without a C compiler the build goes on and boundkit runs in
pure Python (boundkit.cache.ACCELERATED tells which).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "boundkit._speedups",
            ["src/boundkit/_speedups.c"],
            optional=True,
        )
    ]
)
