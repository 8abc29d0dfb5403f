"""Packaging glue: the repository's top-level folders install as one namespace, ``edugate.<folder>``.

Everything else (metadata, dependencies, extras, entry points) is in ``pyproject.toml``. This file
only maps folders to import names and finds their subpackages, so that a new driver folder ships
without a line here. Every subfolder counts, with or without an ``__init__.py`` (a model's folder in
``ml_models/``, the kits' ``firmware_bridge/arduino/``), and every file in it ships (pyproject.toml's
package-data): profiles, samples, templates, models and headers alike.
"""

from setuptools import find_namespace_packages, setup

FOLDERS = ["contract", "common", "gateway", "central", "drivers", "simulators", "ml_models", "firmware_bridge", "cli"]

packages = [f"edugate.{name}" for name in FOLDERS]
packages += [f"edugate.{name}.{sub}" for name in FOLDERS
             for sub in find_namespace_packages(where=name, exclude=["__pycache__", "*.__pycache__"])]

setup(
    packages=packages,
    package_dir={f"edugate.{name}": name for name in FOLDERS},
)
