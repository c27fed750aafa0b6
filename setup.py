"""For Scrapyd only: ``scrapyd-deploy`` builds the egg with ``python setup.py bdist_egg``.

Everything (metadata, packages, the SQL migrations and the default config as package data, the
``scrapy`` settings entry point Scrapyd reads) is declared in ``pyproject.toml``; wheels and
``pip install`` use that file alone.
"""

from setuptools import setup

setup()
