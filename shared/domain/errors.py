"""What the two-factor domain refuses, as exceptions the entry points map to problems.

Errors::

    DomainError
    ├── NotAllowed            the state forbids the command (409 at the API)
    │   ├── AlreadyEnabled
    │   ├── NotEnabled
    │   └── NoPendingEnrolment
    └── NotFound              no such account (404)
"""

from __future__ import annotations

__all__ = [
    "AlreadyEnabled",
    "DomainError",
    "NoPendingEnrolment",
    "NotAllowed",
    "NotEnabled",
    "NotFound",
]


class DomainError(Exception):
    """A command the current state refuses. ``code`` is the problem type's last segment."""

    code = "refused"


class NotAllowed(DomainError):
    code = "not_allowed"


class AlreadyEnabled(NotAllowed):
    code = "twofa_already_enabled"


class NotEnabled(NotAllowed):
    code = "twofa_not_enabled"


class NoPendingEnrolment(NotAllowed):
    code = "no_pending_enrolment"


class NotFound(DomainError):
    code = "not_found"
