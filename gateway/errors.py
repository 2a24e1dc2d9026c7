"""The gateway's exception tree.

Each ``GatewayError`` subclass maps to one HTTP status and one page, so that
handlers raise and a single middleware renders the answer. Exceptions carry
the tenant and a machine-readable reason for the log, never a secret.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway turns into a response."""

    status = 500
    page = "error"
    #: The extra sentence a page shows when the raiser gives none.
    default_shown = ""

    def __init__(
        self, reason: str, *, tenant: str | None = None, detail: str = "", shown: str = ""
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tenant = tenant
        #: Logged with the refusal; on a 400 page it names the bad parameter.
        self.detail = detail
        #: An extra sentence for the page, for refusals that may say why.
        self.shown = shown or self.default_shown


class BadRequest(GatewayError):
    status = 400


class Unauthorized(GatewayError):
    status = 401


class Forbidden(GatewayError):
    status = 403


class FormRejected(Forbidden):
    """A form post or logout that is stale, reused or sent from another site.

    The page states the reason, because it depends on neither the
    certificate nor the address. The way on is a new launch.
    """

    default_shown = (
        "Dit formulier is verlopen, al gebruikt of niet vanaf deze pagina "
        "verstuurd. Start Medimo opnieuw vanuit Ysis."
    )


class NotFound(GatewayError):
    status = 404


class MisdirectedRequest(GatewayError):
    status = 421


class TooManyRequests(GatewayError):
    status = 429


class UpstreamFailed(GatewayError):
    status = 502


class ServiceUnavailable(GatewayError):
    status = 503


class UpstreamTimeout(GatewayError):
    status = 504


class ConfigError(Exception):
    """Raised when a configuration file is invalid; carries every problem."""

    def __init__(self, problems: list[str], warnings: list[str] | None = None) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.warnings = warnings or []


class ListenError(Exception):
    """Raised when the gateway cannot listen on a configured address."""


class StorageError(Exception):
    """Base of errors from the link table and other SQL storage."""


class SchemaOutdated(StorageError):
    """Raised when the database schema is not at the newest migration."""


class DatabaseUnavailable(StorageError):
    """Raised when the database cannot be connected to or opened.

    The message is one line: the database URL without its password, the
    driver's reason and what to check.
    """


class LinkConflict(StorageError):
    """Raised when a new link would break a uniqueness rule.

    ``field`` is ``"ysis_user"`` when the Ysis account ID is already linked in
    the tenant, or ``"medimo_account"`` when the Medimo account is.
    """

    def __init__(self, tenant: str, field: str) -> None:
        super().__init__(f"tenant {tenant!r}: {field} is already linked")
        self.tenant = tenant
        self.field = field
