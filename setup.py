"""Packaging for Scrapyd: ``scrapyd-deploy`` runs ``python setup.py bdist_egg`` with this file.

The egg must carry the data files the code reads with :mod:`importlib.resources`: the SQL
migrations (``holocron_scrapy/sql`` is a symlink to the top-level ``sql/``) and the packaged
default config (``holocron_scrapy/resources/*.yaml``). Without ``package_data`` an egg holds
only ``.py`` files. The dependencies come from Scrapyd's environment (requirements.txt), so
``install_requires`` stays empty.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def read_version() -> str:
    """``holocron_scrapy.__version__`` without importing the package (its deps may be absent)."""
    text = (HERE / "holocron_scrapy" / "__init__.py").read_text("utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if not match:
        raise RuntimeError("holocron_scrapy/__init__.py defines no __version__")
    return match.group(1)


setup(
    name="holocron_scrapy",
    version=read_version(),
    description="Polite, crash-proof ingestion of MediaWiki APIs and websites into a JSON lake and SQL",
    packages=find_packages(exclude=["tests", "tests.*", "benchmarks", "benchmarks.*"]),
    # setuptools globs these relative to the package directory and follows the sql symlink.
    package_data={
        "holocron_scrapy": ["sql/*.sql", "sql/sqlite/*.sql"],
        "holocron_scrapy.resources": ["*.yaml"],
    },
    include_package_data=False,
    python_requires=">=3.11",
    install_requires=[],
    entry_points={"scrapy": ["settings = holocron_scrapy.settings"]},
    # Everything packaged is read through importlib.resources, which works from a zipped egg.
    zip_safe=True,
)
