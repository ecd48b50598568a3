"""A search tool over a local document collection the user gives, ranked with BM25.

The collection is a folder of `.txt`/`.md` files (each file a document, titled by its path)
or a JSON/JSONL file of documents (strings, or objects with `text` and an optional `title`).
Documents are cut into passages of whole paragraphs, so an answer comes back as the part of
a long document that holds it. BM25 (term frequency saturated by `k1`, passage length
normalised by `b`, rare terms weighted up) is a dozen lines and needs no index files: the
collection is read once, when the tool is built.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from itc.runtime.tools import Tool, tool

_WORD = re.compile(r"\w+")
_STOP = frozenset(
    "a an and are as at be by for from has have in is it its of on or that the this to was "
    "were which who with what when where how".split()
)


def terms(text: str) -> list[str]:
    """Lower-cased words without stop words, plurals folded crudely (`trenches`, `cats`
    match `trench`, `cat`): enough for keyword search, no stemmer needed."""
    found = []
    for word in _WORD.findall(text.lower()):
        if word in _STOP:
            continue
        if len(word) > 4 and word.endswith(("ches", "shes", "sses", "xes")):
            word = word[:-2]
        elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
            word = word[:-1]
        found.append(word)
    return found


@dataclass(frozen=True)
class Passage:
    title: str
    text: str


class DocumentIndex:
    """BM25 over passages. Scores use the title's words too (a question naming a topic
    finds the document about it)."""

    def __init__(self, passages: Iterable[Passage], k1: float = 1.5, b: float = 0.75) -> None:
        self.passages = list(passages)
        self.k1, self.b = k1, b
        self._postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self._lengths: list[int] = []
        for index, passage in enumerate(self.passages):
            counts = Counter(terms(f"{passage.title}\n{passage.text}"))
            self._lengths.append(sum(counts.values()))
            for term, count in counts.items():
                self._postings[term].append((index, count))
        self._mean_length = sum(self._lengths) / max(len(self._lengths), 1)

    def search(self, query: str, top_k: int = 3) -> list[tuple[Passage, float]]:
        """The best `top_k` passages with their scores, best first (ties in collection
        order); passages sharing no word with the query are never returned."""
        scores: dict[int, float] = defaultdict(float)
        total = len(self.passages)
        for term in set(terms(query)):
            postings = self._postings.get(term, [])
            if not postings:
                continue
            weight = math.log(1 + (total - len(postings) + 0.5) / (len(postings) + 0.5))
            for index, count in postings:
                norm = 1 - self.b + self.b * self._lengths[index] / max(self._mean_length, 1e-9)
                scores[index] += weight * count * (self.k1 + 1) / (count + self.k1 * norm)
        best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:top_k]
        return [(self.passages[index], score) for index, score in best]


def load_documents(path: Path) -> Iterator[tuple[str, str]]:
    """(title, text) of every document at `path` (see the module docstring)."""
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".md")):
            yield str(file.relative_to(path).with_suffix("")), file.read_text(encoding="utf-8")
        return
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        items: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
    elif path.suffix == ".json":
        items = json.loads(text)
        if isinstance(items, dict):
            items = [{"title": k, "text": v} for k, v in items.items()]
    else:
        yield path.stem, text
        return
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a list of documents")
    for number, item in enumerate(items):
        if isinstance(item, str):
            yield f"{path.stem}[{number}]", item
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            yield str(item.get("title") or item.get("id") or number), item["text"]
        else:
            raise ValueError(f"{path}: document {number} is neither text nor has a `text`")


def passages(documents: Iterable[tuple[str, str]], max_chars: int = 1200) -> Iterator[Passage]:
    """Documents cut into passages of up to `max_chars`: whole paragraphs packed together
    (a heading stays with the text under it), a longer paragraph cut into pieces."""
    for title, text in documents:
        packed = ""
        for paragraph in re.split(r"\n\s*\n", text.strip()):
            paragraph = paragraph.strip()
            if packed and len(packed) + 2 + len(paragraph) <= max_chars:
                packed = f"{packed}\n\n{paragraph}"
                continue
            if packed:
                yield Passage(title, packed)
            pieces = [paragraph[i : i + max_chars] for i in range(0, len(paragraph), max_chars)]
            yield from (Passage(title, piece) for piece in pieces[:-1])
            packed = pieces[-1] if pieces else ""
        if packed:
            yield Passage(title, packed)


def document_search_tool(
    path: Path | str,
    name: str = "document_search",
    *,
    top_k: int = 3,
    passage_chars: int = 1200,
    latency: float = 0.0,
) -> Tool:
    """A search over the collection at `path`, read now (a missing or empty one is a
    ValueError here rather than an empty answer at run time)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"document collection {path} does not exist")
    index = DocumentIndex(passages(load_documents(path), passage_chars))
    if not index.passages:
        raise ValueError(f"document collection {path} holds no text")

    @tool(name=name)
    async def document_search(
        query: Annotated[str, Field(description="keywords to look for")],
    ) -> list[dict[str, Any]]:
        """Searches the document collection; returns the best matching passages (title,
        text, score), best first."""
        return [
            {"title": p.title, "text": p.text, "score": round(score, 3)}
            for p, score in index.search(query, top_k)
        ]

    return replace(document_search, latency=latency)
