"""The package's own exception and warning types.

Everything a user can get wrong raises a subclass of ``MetaAllianceError`` with a message a person
can act on; the CLI prints ``str(error)`` and exits 1, never a traceback.
"""


class MetaAllianceError(Exception):
    """Base class of every error this package raises on purpose."""


class OptionError(MetaAllianceError, ValueError):
    """An option (method, test, vocabulary level ...) is not one of the allowed values."""


class DataError(MetaAllianceError, ValueError):
    """Input data cannot be used: missing column, non-numeric value, bad variance ..."""


class ValidationError(MetaAllianceError):
    """The findings dataset has problems; ``problems`` holds one line per problem."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class ModelError(MetaAllianceError):
    """A model cannot be fitted: singular design, too few studies, no convergence without fallback."""


class MetaAllianceWarning(UserWarning):
    """Warnings about omitted rows, fallbacks and similar, shown on stderr by the CLI."""
