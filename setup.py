"""Build step: ship the top-level ``skills/`` and ``streams/`` folders inside the wheel.

Everything else is declared in pyproject.toml. An editable install finds both folders in
the checkout (``aqe.skills.library.skills_root``, ``aqe.log.streams.default_streams_dir``);
a wheel (``pip install .``, ``pip wheel .``) carries copies as ``aqe/_skills`` and
``aqe/_streams``, which those functions look for first. MANIFEST.in puts the folders
in the sdist, so a wheel built from it carries them too.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
SHIPPED = {"skills": "aqe/_skills", "streams": "aqe/_streams"}


class BuildPyWithData(build_py):
    """``build_py`` that also copies the shipped folders into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for source, target in SHIPPED.items():
            folder = HERE / source
            if folder.is_dir():
                destination = Path(self.build_lib) / target
                shutil.rmtree(destination, ignore_errors=True)
                shutil.copytree(
                    folder, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                )


setup(cmdclass={"build_py": BuildPyWithData})
