"""Build hook: the repository's top-level config/, rules/, templates/ and systemd/ folders (and
connector.ini.example) ship inside the package as `connector/shipped/`, where
connector.settings.shipped finds them in an installed wheel. Everything else is
declared in setup.cfg."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIPPED = ("config", "rules", "templates", "systemd")
EXAMPLE = "connector.ini.example"


class build_py_with_shipped(build_py):
    """build_py, plus the shipped folders copied to connector/shipped/ in the build."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the folders where they are
        target = Path(self.build_lib) / "connector" / "shipped"
        for folder in SHIPPED:
            shutil.copytree(ROOT / folder, target / folder, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy2(ROOT / EXAMPLE, target / EXAMPLE)


setup(cmdclass={"build_py": build_py_with_shipped})
