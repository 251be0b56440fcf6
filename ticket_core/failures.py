"""Which database errors are an outage (hold and retry) and which fail the message at hand.

Only a real outage holds a consumer (`StorageUnavailable.hold`): the server or the connection
is not there, SQLite's file is locked or cannot be opened. Anything else that the database
answers the same way at every attempt (a constraint conflict that five fresh plans could not
get past, a missing table, a value it refuses) is a failure of that message: the bus retries
it, then dead-letters it `unpersistable` (consume.py), and the consumer moves on instead of
stalling behind it while `/readyz` says 200.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

from intake.errors import Transient

# PostgreSQL: serialization failure, deadlock detected. Retried in place, they pass.
RETRYABLE_SQLSTATES = {"40001", "40P01"}
# PostgreSQL SQLSTATE classes meaning "the server or the connection is not there".
UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P")
# What sqlite3 says (an OperationalError, no SQLSTATE) when the file is there but not usable
# now, as opposed to a deterministic fault such as "no such table".
SQLITE_OUTAGE_MESSAGES = ("database is locked", "database table is locked", "unable to open",
                          "disk i/o error", "database or disk is full", "database is busy")


class Unpersistable(Transient):
    """The database refused this message the same way every time (not an outage).

    Transient, so the bus retries it; consume.py turns it into `Rejected(unpersistable)`
    once it failed the same way `UNPERSISTABLE_AFTER` deliveries in a row.
    """

    reason = "unpersistable"


def sqlstate(exc: sa_exc.DBAPIError) -> str:
    return str(getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None) or "")


def storage_unavailable(exc: BaseException) -> bool:
    """Whether a database error means "not reachable now" (retry later), not a bug."""
    if isinstance(exc, (OSError, TimeoutError, sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        code = sqlstate(exc)
        if code:
            return code.startswith(UNAVAILABLE_SQLSTATE_PREFIXES) or code in RETRYABLE_SQLSTATES
        if isinstance(exc, sa_exc.InterfaceError):
            return True
        if isinstance(exc, sa_exc.OperationalError):
            # No SQLSTATE: SQLite, or a driver-level connection failure (asyncpg's refused
            # connection is an OSError underneath, wrapped as OperationalError/InterfaceError).
            text = str(exc.orig).lower()
            module = type(exc.orig).__module__
            if module.startswith("sqlite3") or "sqlite" in module:
                return any(outage in text for outage in SQLITE_OUTAGE_MESSAGES)
            return True
    return False
