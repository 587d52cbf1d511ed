"""The one exception type silodiff raises for bad input or state a user can fix."""


class SilodiffError(ValueError):
    """A problem the user can act on; the CLI prints it as one line, the service as a 4xx body."""
