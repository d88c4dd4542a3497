"""The use case: accept a synthesis, run it under a global permit, record every step.

`TaskService` is all the web layer and the runtime see. Its private parts live beside it and
nothing else imports them: `ledger` (the tasks this worker holds and who is on each),
`lease_keeper` (one thread renewing every held permit), `drain` (an operator's drain order),
`retries` (riding out store outages), `errors` (what a submission is refused with).
"""

from taskmon.service.errors import Draining, IdempotencyConflict, QueueFull, ServiceClosed
from taskmon.service.task_service import Submission, TaskService

__all__ = [
    "Draining",
    "IdempotencyConflict",
    "QueueFull",
    "ServiceClosed",
    "Submission",
    "TaskService",
]
