"""Short free-text answers (ParallelQA-style): normalised comparison, numbers to the gold's
precision."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from itc.verifiers.math import normalize_number

_NUMBER_TOKEN = re.compile(r"[-−]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mbox)\s*\{([^{}]*)\}")
_ARTICLE = re.compile(r"^(?:the|a|an)\s+")


def normal_text(answer: str) -> str:
    """Case-folded words without punctuation, `\\text{}` wrappers or a leading article."""
    text = unicodedata.normalize("NFKC", _TEXT_WRAPPER.sub(r"\1", answer)).casefold()
    text = " ".join(re.sub(r"[^\w\s]", " ", text).split())
    return _ARTICLE.sub("", text)


def _decimal(text: str) -> Decimal | None:
    text = text.strip().replace(",", "").replace("−", "-")
    if not re.fullmatch(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)", text):
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _predicted_number(predicted: str) -> Fraction | None:
    plain = normalize_number(predicted)
    if plain is None:
        # "about 5,931.8 km": one number with words around it still counts; two numbers do not.
        tokens = _NUMBER_TOKEN.findall(predicted)
        plain = normalize_number(tokens[0]) if len(tokens) == 1 else None
    return Fraction(plain) if plain is not None else None


def exact_match(gold: str, predicted: str) -> bool:
    """Whether a short answer matches the gold one.

    Numeric gold (``"5931.80"``, ``"104736200"``): the predicted answer must hold exactly one
    number (units, ``$``, ``%`` and thousands separators are ignored) that equals the gold when
    rounded to the gold's number of decimal places; the gold's precision is what the
    reference committed to, so a more precise prediction is not penalised.
    Other gold: equality after Unicode normalisation, case folding, dropping punctuation,
    ``\\text{}`` wrappers and a leading article ("The Mariana Trench." == "mariana trench").
    """
    gold_number = _decimal(gold)
    if gold_number is not None:
        value = _predicted_number(predicted)
        if value is None:
            return False
        exponent = gold_number.as_tuple().exponent
        places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
        return 2 * abs(value - Fraction(gold_number)) * 10**places <= 1
    return bool(normal_text(gold)) and normal_text(gold) == normal_text(predicted)
