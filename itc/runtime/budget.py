"""Hard budgets: every call reserves its worst case before it is sent.

Reserving (rather than counting after the fact) is what makes the limit hard under
concurrency: two calls in flight can never jointly overshoot, because each one's worst case
was already set aside when it was admitted. A request that would not fit is clipped
(fewer `max_tokens`) or refused, never sent past the limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from itc.types import Budget, Usage


class BudgetExhausted(RuntimeError):
    """A call was refused because it could not fit in what is left of the budget."""

    def __init__(self, limit: str, detail: str) -> None:
        super().__init__(f"{limit} budget exhausted: {detail}")
        self.limit = limit


@dataclass(frozen=True)
class Reservation:
    prompt_tokens: int
    completion_tokens: int
    max_tokens: int
    clipped: bool


class Ledger:
    """Spending of one problem against its budget."""

    def __init__(self, budget: Budget, clock: Callable[[], float] | None = None) -> None:
        self.budget = budget
        self._clock = clock or time.monotonic
        self.started = self._clock()
        self.spent = Usage()
        self._reserved_tokens = 0
        self._reserved_completion = 0
        self._reserved_calls = 0

    @property
    def deadline(self) -> float | None:
        if self.budget.wall_time is None:
            return None
        return self.started + self.budget.wall_time

    def time_left(self) -> float | None:
        deadline = self.deadline
        return None if deadline is None else deadline - self._clock()

    def reserve(self, *, prompt_tokens: int, n: int, max_tokens: int) -> Reservation:
        """Admit one call, clipping `max_tokens` to what the budget still allows."""
        budget = self.budget
        left = self.time_left()
        if left is not None and left <= 0:
            raise BudgetExhausted("wall_time", f"{budget.wall_time}s elapsed")
        if budget.calls is not None and self.spent.calls + self._reserved_calls >= budget.calls:
            raise BudgetExhausted("calls", f"all {budget.calls} calls used or in flight")
        allowed = max_tokens
        if budget.tokens is not None:
            free = budget.tokens - self.spent.total_tokens - self._reserved_tokens - prompt_tokens
            allowed = min(allowed, free // n if free > 0 else -1)
            if free < 0 or (max_tokens > 0 and allowed < 1):
                raise BudgetExhausted(
                    "tokens",
                    f"{prompt_tokens} prompt tokens + {n}x at least 1 new token do not fit in "
                    f"the {budget.tokens - self.spent.total_tokens - self._reserved_tokens} left",
                )
        if budget.completion_tokens is not None and max_tokens > 0:
            free = budget.completion_tokens - self.spent.completion_tokens
            free -= self._reserved_completion
            allowed = min(allowed, free // n)
            if allowed < 1:
                raise BudgetExhausted(
                    "completion_tokens", f"{n} samples do not fit in the {free} tokens left"
                )
        reservation = Reservation(
            prompt_tokens=prompt_tokens,
            completion_tokens=n * allowed,
            max_tokens=allowed,
            clipped=allowed < max_tokens,
        )
        self._reserved_tokens += prompt_tokens + reservation.completion_tokens
        self._reserved_completion += reservation.completion_tokens
        self._reserved_calls += 1
        return reservation

    def settle(self, reservation: Reservation, spent: Usage) -> None:
        """Release a reservation and charge what the server actually spent."""
        self._reserved_tokens -= reservation.prompt_tokens + reservation.completion_tokens
        self._reserved_completion -= reservation.completion_tokens
        self._reserved_calls -= 1
        self.spent = self.spent + spent
