"""Service-level domain errors (the engine's own are in ``app.ml.errors``).

    CharnnError
    ├── NotFoundError          a model, version or job that does not exist
    ├── ConflictError          the resource is busy or in a state that forbids the action
    ├── LimitExceededError     a configured limit was passed; names the limit and setting
    │   └── UploadTooLargeError    an uploaded file passed its size limit (413)
    ├── InvalidRequestError    a request that validation alone could not refuse
    ├── TooManyRequestsError   come back later; says when
    │   └── QueueFullError     CHARNN_MAX_QUEUED_JOBS jobs are waiting already
    └── LeaseLostError         a worker no longer owns the job it was running

The API maps each to one HTTP status in ``app/api/errors.py``.
"""

from __future__ import annotations

from app.ml.errors import CharnnError


class NotFoundError(CharnnError):
    pass


class ConflictError(CharnnError):
    pass


class LimitExceededError(CharnnError):
    def __init__(self, field: str, message: str, setting: str) -> None:
        self.field = field
        self.setting = setting
        super().__init__(f"{field}: {message} (limit set by {setting})")


class UploadTooLargeError(LimitExceededError):
    pass


class InvalidRequestError(CharnnError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class TooManyRequestsError(CharnnError):
    def __init__(self, message: str, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class QueueFullError(TooManyRequestsError):
    def __init__(self, waiting: int, limit: int) -> None:
        super().__init__(
            f"{waiting} jobs are waiting already, at most {limit} "
            "(limit set by CHARNN_MAX_QUEUED_JOBS); try again later",
            retry_after=30,
        )


class LeaseLostError(CharnnError):
    pass
