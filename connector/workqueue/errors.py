"""The one way an operator action says no."""


class Refused(Exception):
    """An action that cannot be done as asked: the message is one line saying
    what and why, shown as is (CLI: exit 1; mail: the reply to the sender)."""
