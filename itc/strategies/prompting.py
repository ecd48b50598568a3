"""What the nodes that ask the model in their own words share (critic, ranker, fuser, refine):
a template checked against the placeholders the node fills in, a system message, how much of
a solution is shown and, for those that write free text, the sampling settings."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator

from itc.backends.base import GenerationRequest
from itc.nodes import Strategy, check_template
from itc.runtime.context import NodeContext
from itc.types import Candidate, Message


class Templated(Strategy):
    """A node whose request is its `template`, filled in, with a system message. A subclass
    gives `template` its default and names the `placeholders` it fills in, which a loaded
    template may use."""

    placeholders: ClassVar[tuple[str, ...]] = ("question",)
    template: str
    system: str | None = Field(default=None, description="A system message put first.")

    @field_validator("template")
    @classmethod
    def _placeholders(cls, template: str) -> str:
        return check_template(template, cls.placeholders)


class Prompted(Templated):
    """A templated node whose request is one user turn (after `system`, when there is one),
    showing solutions cut to `max_solution_chars`."""

    max_solution_chars: int = Field(
        default=4000, ge=100, description="Only the end of a longer solution is shown."
    )

    def shown(self, candidate: Candidate) -> str:
        """The end of the candidate's text: as much of it as the prompt shows."""
        return candidate.text[-self.max_solution_chars :]

    def messages(self, **fields: Any) -> tuple[Message, ...]:
        """The template filled in with `fields`, as a user turn after the system message."""
        user = Message(role="user", content=self.template.format(**fields))
        return (Message(role="system", content=self.system), user) if self.system else (user,)


class Writer(Prompted):
    """A prompted node that samples free text (a review, a fused answer, a revision)."""

    temperature: float = Field(default=0.7, ge=0.0, description="Sampling temperature.")
    max_tokens: int = Field(default=512, ge=1, description="Most tokens one answer may take.")
    seed: int | None = Field(
        default=0, description="Base seed; each rollout gets its own (null: unseeded, uncached)."
    )

    def sample(
        self, ctx: NodeContext, messages: tuple[Message, ...], **options: Any
    ) -> GenerationRequest:
        """A request for `messages` with this node's sampling settings (and `options`)."""
        return GenerationRequest(
            messages=messages,
            max_tokens=self.max_tokens,
            temperature=self.temperature,
            seed=ctx.seed_for(self.seed),
            **options,
        )
