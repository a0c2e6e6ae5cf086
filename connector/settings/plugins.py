"""Settings plug-ins: callables `plugin(settings)` run by `load_settings` after the
core files are read. Each validates its own file and stores the result in
`settings.extra`, raising `ConfigError` like the core loader does.
"""

PLUGINS = (
    __import__("connector.scanners.config", fromlist=["load_scanners"]).load_scanners,  # config/scanners.yaml
)

# The files of config/ the plug-ins read; any other file there is refused (a typo).
CONFIG_FILES = ("scanners.yaml",)
