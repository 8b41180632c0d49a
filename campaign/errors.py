"""The one error root. Each docstring is the user-facing message; context travels in fields."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path


class CampaignError(Exception):
    """The campaign engine failed."""

    #: exit code for the command line: 2 for bad input or config, 1 for a runtime failure.
    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0])


class BadInput(CampaignError):
    """The input is not valid."""

    exit_code = 2


class ConfigError(BadInput):
    """The configuration is not valid."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"Config {variable!r}: {problem}")


class PlanError(BadInput):
    """The plan is not valid."""

    def __init__(self, problems: list[PlanProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class PlanProblem:
    """One problem in a plan, located by file, line and field."""

    def __init__(self, path: str, line: int | None, field: str, problem: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.problem = problem

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.problem}"

    def __repr__(self) -> str:
        return f"PlanProblem({self!s})"


class InvalidAddress(BadInput):
    """The email address is not valid."""

    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        #: what is wrong with it, in words, without the address (said back on the signup form)
        self.problem = problem
        super().__init__(f"{address!r} is not a valid email address: {problem}")


class Suppressed(BadInput):
    """This address asked to be forgotten and is never mailed again."""

    def __init__(self, address: str, reason: str = "forgotten") -> None:
        self.address = address
        #: why it is suppressed: forgotten, bounced or complained
        self.reason = reason
        super().__init__(
            f"{address} was forgotten on request and is suppressed; not added"
            if reason == "forgotten"
            else f"{address} is suppressed ({reason}); not added: an operator may lift it with "
            "`campaign suppressions clear`"
        )


class InvalidToken(BadInput):
    """This link is not valid: it was altered, has expired, or is not for this action."""


class OrphanedEnrollments(BadInput):
    """Active enrollments run under a plan id that the plan file does not have."""

    def __init__(self, message: str, orphans: dict[str, int]) -> None:
        #: plan id -> active enrollments under it
        self.orphans = orphans
        super().__init__(message)


class RenameRefused(BadInput):
    """The plan rename was refused; nothing changed."""


class BadRequest(BadInput):
    """The request could not be read: send a form or a JSON object of text fields."""

    def __init__(self, message: str | None = None, status: int = 400) -> None:
        #: the HTTP status that says what was wrong (400 unreadable, 415 unknown content type)
        self.status = status
        super().__init__(message)


class BodyTooLarge(BadRequest):
    """request body too large"""

    def __init__(self) -> None:
        super().__init__(status=413)


class BodyTimeout(BadRequest):
    """request body too slow"""

    def __init__(self) -> None:
        super().__init__(status=408)


class UnsendableAddress(CampaignError):
    """No SMTP envelope can carry this address (stored bypassing the signup checks)."""

    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        super().__init__(f"cannot send to {address!r}: {problem}")


class UnknownSubscriber(BadInput):
    """No subscriber has that address."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__(f"no subscriber with address {address!r}")


class UnknownPlan(BadInput):
    """No running plan has that id."""

    def __init__(self, plan_id: str, known: Collection[str] = ()) -> None:
        self.plan_id = plan_id[:64]
        listed = f" (plans: {', '.join(sorted(known))})" if known else ""
        super().__init__(f"no plan has id {self.plan_id!r}{listed}")


class UnknownStep(BadInput):
    """The plan has no such step."""

    def __init__(self, step: str) -> None:
        self.step = step
        super().__init__(f"the plan has no step {step!r} (give a step key or a day number)")


class RenderError(CampaignError):
    """A template failed to render."""

    def __init__(self, step_key: str, problem: str) -> None:
        self.step_key = step_key
        super().__init__(f"step {step_key!r} failed to render: {problem}")


class DeliveryError(CampaignError):
    """The mail server did not accept the message."""

    def __init__(
        self, problem: str, *, smtp_code: int | None = None, enhanced_code: str | None = None
    ) -> None:
        self.smtp_code = smtp_code
        self.enhanced_code = enhanced_code
        super().__init__(problem)


class TemporaryFailure(DeliveryError):
    """The mail server deferred the message (4xx or a dropped connection); it will be retried."""


class PermanentFailure(DeliveryError):
    """The mail server rejected the message for good (5xx)."""

    def __init__(
        self,
        problem: str,
        *,
        smtp_code: int | None = None,
        enhanced_code: str | None = None,
        bounce: bool = True,
    ) -> None:
        #: True when the reply is about the address (RCPT refused, 5.1.x): the subscriber bounces.
        self.bounce = bounce
        super().__init__(problem, smtp_code=smtp_code, enhanced_code=enhanced_code)


class UnknownOutcome(DeliveryError):
    """The message went to the mail server, whose reply to its end never came: it may have been
    delivered. Retried at most once, after a delay; never counted as a bounce."""


class RelayThrottled(TemporaryFailure):
    """The mail server asks us to slow down (4.7.x): the whole relay backs off, not one email."""


class TransportUnavailable(DeliveryError):
    """The mail server cannot be used (connection, TLS or authentication); nothing was sent."""


class MailboxUnavailable(CampaignError):
    """The bounce mailbox cannot be read (connection, TLS or authentication)."""

    def __init__(self, where: str, problem: str) -> None:
        #: the server as `scheme://host:port`, and what went wrong there
        self.where = where
        self.problem = problem
        super().__init__(f"bounce mailbox {where}: {problem}")


class ListenFailed(CampaignError):
    """The HTTP server cannot listen on that address."""


class AnotherSender(CampaignError):
    """Another scheduler is already sending from this SQLite database."""

    def __init__(self, lock_path: Path, holder: str) -> None:
        self.lock_path = lock_path
        self.holder = holder
        super().__init__(
            f"another scheduler is already sending from this SQLite database ({holder}; lock "
            f"{lock_path}). Run one scheduler per SQLite file, or use PostgreSQL for several."
        )


class DatabaseError(CampaignError):
    """The database is not reachable or not migrated."""


class DatabaseRefusesWrites(DatabaseError):
    """The database refuses writes (read-only, full or locked); sending is paused until it
    accepts them again."""

    def __init__(self, reason: str, detail: str = "") -> None:
        #: why, in a few words ("read-only, after a failover?", "disk full", ...)
        self.reason = reason
        #: what the database driver said
        self.detail = detail
        super().__init__(f"the database refuses writes ({reason})")

    def __reduce__(self) -> tuple[type[DatabaseRefusesWrites], tuple[str, str]]:
        # It crosses a pipe from sender processes: rebuilt from its fields, not its message.
        return type(self), (self.reason, self.detail)


class LoginRefused(BadInput):
    """The address or the password is wrong."""


class LoginThrottled(CampaignError):
    """Too many failed sign-ins: wait a few minutes and try again."""

    def __init__(self, retry_after_seconds: int) -> None:
        self.retry_after_seconds = retry_after_seconds
        minutes = max(1, (retry_after_seconds + 59) // 60)
        super().__init__(f"Too many failed sign-ins: try again in {minutes} minute(s).")
