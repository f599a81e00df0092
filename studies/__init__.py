"""The example study files (``*.toml``), installed as the package ``hpsearch.studies``.

``pyproject.toml`` maps this folder onto ``hpsearch.studies`` so a wheel
install ships the same files; ``hpsearch studies`` lists them and
``hpsearch init NAME`` copies one out (see :mod:`hpsearch.cli.studies`).
"""
