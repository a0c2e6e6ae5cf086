"""Settings: the INI file and the YAML files in `config/`, validated.

`load_settings(path)` returns a `Settings` or raises `ConfigError` naming the
file, the key, what is wrong and a hint. Nothing else in the package reads
configuration files.
"""

from connector.settings.errors import ConfigError
from connector.settings.loader import Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
