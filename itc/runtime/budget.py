"""Hard budgets: every call reserves its worst case before it is sent.

Reserving (rather than counting after the fact) is what makes the limit hard under
concurrency: two calls in flight can never jointly overshoot, because each one's worst case
was already set aside when it was admitted. A request that would not fit is clipped
(fewer `max_tokens`) or refused, never sent past the limit.
"""

from __future__ import annotations

import asyncio
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
    limit: str | None = None
    reward: bool = False
    """A reward-model call, counted against `Budget.reward_calls` too."""
    """The budget limit that clipped `max_tokens`, if one did."""


class Ledger:
    """Spending of one problem against its budget.

    A call that would be refused or clipped only because other calls' worst cases are still
    reserved is told to wait (`admit` returns an event) rather than refused: once those
    settle at what they really spent, there is usually room for it in full.
    """

    def __init__(self, budget: Budget, clock: Callable[[], float] | None = None) -> None:
        self.budget = budget
        self._clock = clock or time.monotonic
        self.started = self._clock()
        self.spent = Usage()
        self._reserved_tokens = 0
        self._reserved_completion = 0
        self._reserved_calls = 0
        self._reserved_reward_calls = 0
        self._settled = asyncio.Event()

    @property
    def deadline(self) -> float | None:
        if self.budget.wall_time is None:
            return None
        return self.started + self.budget.wall_time

    def time_left(self) -> float | None:
        deadline = self.deadline
        return None if deadline is None else deadline - self._clock()

    def _allowance(
        self,
        prompt_tokens: int,
        n: int,
        max_tokens: int,
        *,
        counting_reserved: bool,
        reward: bool = False,
    ) -> tuple[int, str | None]:
        """How many tokens each of `n` samples may have and the limit that set it (None: the
        request's own `max_tokens`), or BudgetExhausted."""
        budget = self.budget
        tokens = self._reserved_tokens if counting_reserved else 0
        completion = self._reserved_completion if counting_reserved else 0
        calls = self._reserved_calls if counting_reserved else 0
        left = self.time_left()
        if left is not None and left <= 0:
            raise BudgetExhausted("wall_time", f"{budget.wall_time}s elapsed")
        if budget.calls is not None and self.spent.calls + calls >= budget.calls:
            raise BudgetExhausted("calls", f"all {budget.calls} calls used or in flight")
        if reward and budget.reward_calls is not None:
            reward_calls = self._reserved_reward_calls if counting_reserved else 0
            if self.spent.reward_calls + reward_calls >= budget.reward_calls:
                raise BudgetExhausted(
                    "reward_calls",
                    f"all {budget.reward_calls} reward-model calls used or in flight",
                )
        allowed, binding = max_tokens, None
        if budget.tokens is not None:
            free = budget.tokens - self.spent.total_tokens - tokens - prompt_tokens
            share = free // n if free > 0 else -1
            if share < allowed:
                allowed, binding = share, "tokens"
            if free < 0 or (max_tokens > 0 and allowed < 1):
                raise BudgetExhausted(
                    "tokens",
                    f"{prompt_tokens} prompt tokens + {n}x at least 1 new token do not fit in "
                    f"the {budget.tokens - self.spent.total_tokens - tokens} left",
                )
        if budget.completion_tokens is not None and max_tokens > 0:
            free = budget.completion_tokens - self.spent.completion_tokens - completion
            if free // n < allowed:
                allowed, binding = free // n, "completion_tokens"
            if allowed < 1:
                raise BudgetExhausted(
                    "completion_tokens", f"{n} samples do not fit in the {free} tokens left"
                )
        return allowed, binding

    def reserve(
        self, *, prompt_tokens: int, n: int, max_tokens: int, reward: bool = False
    ) -> Reservation:
        """Admit one call now, clipping `max_tokens` to what the budget still allows."""
        allowed, binding = self._allowance(
            prompt_tokens, n, max_tokens, counting_reserved=True, reward=reward
        )
        reservation = Reservation(
            prompt_tokens=prompt_tokens,
            completion_tokens=n * allowed,
            max_tokens=allowed,
            clipped=allowed < max_tokens,
            limit=binding if allowed < max_tokens else None,
            reward=reward,
        )
        self._reserved_tokens += prompt_tokens + reservation.completion_tokens
        self._reserved_completion += reservation.completion_tokens
        self._reserved_calls += 1
        self._reserved_reward_calls += reward
        return reservation

    def admit(
        self, *, prompt_tokens: int, n: int, max_tokens: int, reward: bool = False
    ) -> Reservation | asyncio.Event:
        """Reserve, or return an event to wait on when the call is refused or clipped only
        because of reservations still outstanding (set when one of them settles)."""
        try:
            reservation = self.reserve(
                prompt_tokens=prompt_tokens, n=n, max_tokens=max_tokens, reward=reward
            )
        except BudgetExhausted:
            if self._reserved_calls == 0 or not self._better_alone(
                prompt_tokens, n, max_tokens, 0, reward
            ):
                raise
            return self._settled
        if reservation.clipped and self._reserved_calls > 1:
            if self._better_alone(prompt_tokens, n, max_tokens, reservation.max_tokens, reward):
                self._release(reservation)
                return self._settled
        return reservation

    def _better_alone(
        self, prompt_tokens: int, n: int, max_tokens: int, allowed: int, reward: bool
    ) -> bool:
        try:
            alone, _ = self._allowance(
                prompt_tokens, n, max_tokens, counting_reserved=False, reward=reward
            )
        except BudgetExhausted:
            return False
        return alone > allowed

    def _release(self, reservation: Reservation) -> None:
        self._reserved_tokens -= reservation.prompt_tokens + reservation.completion_tokens
        self._reserved_completion -= reservation.completion_tokens
        self._reserved_calls -= 1
        self._reserved_reward_calls -= reservation.reward

    def admit_tool_call(self) -> None:
        """Charge one tool call now, or refuse it (BudgetExhausted).

        A tool call's cost is known in advance (one call against `Budget.tool_calls`), so it
        is charged when admitted rather than reserved and settled: a check and a charge with
        no await between them, so calls admitted concurrently can never overshoot the limit.
        It is charged however it ends (a tool that fails still ran).
        """
        left = self.time_left()
        if left is not None and left <= 0:
            raise BudgetExhausted("wall_time", f"{self.budget.wall_time}s elapsed")
        limit = self.budget.tool_calls
        if limit is not None and self.spent.tool_calls >= limit:
            raise BudgetExhausted("tool_calls", f"all {limit} tool calls used")
        self.spent = self.spent.model_copy(update={"tool_calls": self.spent.tool_calls + 1})

    def settle(self, reservation: Reservation, spent: Usage) -> None:
        """Release a reservation, charge what the server actually spent, wake waiters."""
        self._release(reservation)
        self.spent = self.spent + spent
        self._settled.set()
        self._settled = asyncio.Event()
