"""Scorers, answer kinds, and math and code grading."""

from __future__ import annotations

from typing import TYPE_CHECKING

from itc._lazy import lazy_exports

_EXPORTS = {
    "MathGrader": "itc.verifiers.math",
    "extract_answer": "itc.verifiers.math",
    "LLMJudge": "itc.verifiers.judge",
    "PartialProbe": "itc.verifiers.judge",
    "StepJudge": "itc.verifiers.judge",
    "ProcessRewardModel": "itc.verifiers.reward_model",
    "OutcomeRewardModel": "itc.verifiers.reward_model",
    "SelfCertainty": "itc.verifiers.self_certainty",
    "StepCertainty": "itc.verifiers.self_certainty",
    "ArithmeticCheck": "itc.verifiers.arithmetic",
    "MathAnswer": "itc.verifiers.answers",
    "TextAnswer": "itc.verifiers.answers",
    "ChoiceAnswer": "itc.verifiers.answers",
    "CodeAnswer": "itc.verifiers.answers",
}
__all__ = [
    "ArithmeticCheck",
    "ChoiceAnswer",
    "CodeAnswer",
    "LLMJudge",
    "MathAnswer",
    "MathGrader",
    "OutcomeRewardModel",
    "PartialProbe",
    "ProcessRewardModel",
    "SelfCertainty",
    "StepCertainty",
    "StepJudge",
    "TextAnswer",
    "extract_answer",
]

if TYPE_CHECKING:
    from itc.verifiers.answers import ChoiceAnswer, CodeAnswer, MathAnswer, TextAnswer
    from itc.verifiers.arithmetic import ArithmeticCheck
    from itc.verifiers.judge import LLMJudge, PartialProbe, StepJudge
    from itc.verifiers.math import MathGrader, extract_answer
    from itc.verifiers.reward_model import OutcomeRewardModel, ProcessRewardModel
    from itc.verifiers.self_certainty import SelfCertainty, StepCertainty
else:
    __getattr__ = lazy_exports("itc.verifiers", _EXPORTS)
