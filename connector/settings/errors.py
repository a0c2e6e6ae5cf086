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
