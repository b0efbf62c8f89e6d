"""The suite's user-facing errors. Each message names the problem and the fix."""


class ConfigError(ValueError):
    """A bad experiment file or override; the message names the key and the fix."""
