"""The joiner's reply: it reads the question, the plan and its results, and either answers
(`Answer: ...`) or says what is missing (`Replan: ...`). The reply is decoded with a grammar
allowing just those two forms (only the first once no new plan may be asked for), so it
always parses; an unconstrained reply without either prefix is taken as the answer. The
call itself is `ToolUser.ask_joiner`."""

from __future__ import annotations

import re

from pydantic import BaseModel

_DECISION = re.compile(r"\s*(answer|replan)\s*:\s*(.*)", re.IGNORECASE | re.DOTALL)


class Decision(BaseModel):
    """An answer, or what a new plan should find (`replan`), and what the call cost."""

    answer: str | None = None
    replan: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None


def parse_decision(text: str, replan: bool) -> Decision:
    """`Answer: x` answers x; `Replan: why` asks for a new plan (when one may be asked for,
    else its text is the answer); anything else is taken whole as the answer."""
    match = _DECISION.match(text)
    if match is None:
        return Decision(answer=text.strip())
    said = match.group(2).strip()
    if match.group(1).lower() == "replan" and replan:
        return Decision(replan=said or "the results are not enough")
    return Decision(answer=said)
