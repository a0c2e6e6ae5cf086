"""The one error type for bad configuration: file, key, problem, hint."""


class ConfigError(Exception):
    """A configuration problem an administrator must fix.

    Printed as ``FILE: KEY: PROBLEM (hint: HINT)`` by `check-config` and by
    `run` when it refuses to start.
    """

    def __init__(self, file, key, problem, hint=""):
        self.file = str(file)
        self.key = key
        self.problem = problem
        self.hint = hint
        super().__init__(str(self))

    def __str__(self):
        text = f"{self.file}: {self.key}: {self.problem}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


def permission_denied(exc):
    """A file or folder of the configuration (or the store) the connector's user may not read
    or write, as one line: the path, and how to fix it."""
    import getpass
    user = getpass.getuser()
    return ConfigError(exc.filename or "-", "-", f"permission denied for user {user!r}",
                       f"make it readable (folders: readable and searchable) by {user}, "
                       f"e.g. chown -R {user} on it, or chmod o+rX; `ls -ld` shows who may")
