"""Where the shipped `config/`, `rules/` and `templates/` folders are.

In a built wheel they are package data, `connector/shipped/<folder>` (the
build copies the repository's top-level folders there, see setup.py); in a
checkout or an editable install they are the repository's top-level folders.
"""

from pathlib import Path

PACKAGE_DATA = Path(__file__).resolve().parent.parent / "shipped"
SOURCE_TREE = Path(__file__).resolve().parents[2]
SHIPPED_DIR = PACKAGE_DATA if PACKAGE_DATA.is_dir() else SOURCE_TREE
