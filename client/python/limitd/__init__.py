"""Python client of limitd: concurrency-limit slots shared across processes and machines.

The one-line version, for code that used a per-process semaphore::

    from limitd import limit_concurrency

    @limit_concurrency("api")          # the limit "api" exists on the server
    def call_api(i): ...

The rest: :class:`Client` (``acquire``, ``slot``, ``limit`` and the admin
calls), :class:`Lease` (renews itself, ``lost`` event, context manager) and
one exception class per problem code (see :mod:`limitd.errors`).

Only the standard library is used; Python 3.9 or later.
"""

from .client import DEFAULT_URL, Client, default_holder
from .concurrency import limit_concurrency
from .errors import (
    BodyTooLarge,
    Conflict,
    Forbidden,
    InternalError,
    InvalidRequest,
    LeaseLost,
    LeaseNotFound,
    LimitdError,
    LimitNotFound,
    MethodNotAllowed,
    NoSlots,
    NotFound,
    QueueFull,
    ServiceUnavailable,
    ShuttingDown,
    SlotsExceedCapacity,
    Starting,
    StoreUnavailable,
    Superseded,
    Timeout,
    Unauthorized,
    Unreachable,
)
from .lease import Lease
from .types import LeaseInfo, Limit, Waiter

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_URL",
    "Client",
    "Lease",
    "LeaseInfo",
    "Limit",
    "Waiter",
    "default_holder",
    "limit_concurrency",
    "LimitdError",
    "InvalidRequest",
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "LimitNotFound",
    "LeaseNotFound",
    "MethodNotAllowed",
    "Conflict",
    "SlotsExceedCapacity",
    "Superseded",
    "BodyTooLarge",
    "NoSlots",
    "ServiceUnavailable",
    "QueueFull",
    "ShuttingDown",
    "Starting",
    "StoreUnavailable",
    "InternalError",
    "Timeout",
    "LeaseLost",
    "Unreachable",
]
