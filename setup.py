"""Packaging glue: the repository's top-level folders install as one namespace, ``edugate.<folder>``.

Everything else (metadata, dependencies, extras, entry points) is in ``pyproject.toml``. This file
only maps folders to import names and finds their subpackages, so that a new driver folder ships
without a line here.
"""

from setuptools import find_packages, setup

FOLDERS = ["contract", "common", "gateway", "central", "drivers", "simulators", "ml_models", "firmware_bridge", "cli"]

packages = [f"edugate.{name}" for name in FOLDERS]
packages += [f"edugate.{name}.{sub}" for name in FOLDERS for sub in find_packages(where=name)]

setup(
    packages=packages,
    package_dir={f"edugate.{name}": name for name in FOLDERS},
)
