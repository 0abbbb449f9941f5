"""Generate ``arithmetic.jsonl``: 60 word problems with two or three numbers and + − ×.

Run once; the output is committed, so every machine evaluates the same problems::

    python bench/data/make_arithmetic.py > bench/data/arithmetic.jsonl

Half the problems use two numbers, half three; each operation is drawn from + − ×, and a
subtraction never goes below zero. Seeded (``--seed``, default 2025), so re-running it
reproduces the file byte for byte.
"""

from __future__ import annotations

import argparse
import json
import random

NAMES = ("Tom", "Mia", "Sam", "Ana", "Leo", "Zoe", "Ben", "Ivy", "Max", "Eva")
ITEMS = ("apples", "marbles", "stickers", "pencils", "cookies", "stamps", "shells", "cards")
PRONOUN = {"Tom": "He", "Sam": "He", "Leo": "He", "Ben": "He", "Max": "He"}


def start(rng: random.Random, name: str, item: str, op: str) -> tuple[str, int]:
    """The opening sentence: a count (for + and −) or groups of a count (for ×)."""
    if op == "*":
        a, b = rng.randint(2, 9), rng.randint(2, 12)
        return f"{name} has {a} bags with {b} {item} in each bag.", a * b
    a = rng.randint(5, 60)
    return f"{name} has {a} {item}.", a


def step(rng: random.Random, pronoun: str, item: str, op: str, total: int) -> tuple[str, int]:
    """One more event changing the count with ``op``."""
    if op == "+":
        b = rng.randint(2, 40)
        return f"{pronoun} buys {b} more {item}.", total + b
    if op == "-":
        b = rng.randint(min(2, total - 1), total - 1)
        return f"{pronoun} gives {b} {item} to a friend.", total - b
    b = rng.randint(2, 5)
    word = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}[b]
    return f"Then {pronoun.lower()} ends up with {word} as many {item} as that.", total * b


def problem(rng: random.Random, num_numbers: int) -> dict[str, str]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    pronoun = PRONOUN.get(name, "She")
    first = rng.choice("+-*")
    sentences = []
    opening, total = start(rng, name, item, first)
    sentences.append(opening)
    # A "bags" opening states two numbers; any other states one, and ``first`` adds the next.
    ops = ([] if first == "*" else [first]) + [rng.choice("+-*") for _ in range(num_numbers - 2)]
    for op in ops:
        sentence, total = step(rng, pronoun, item, op, total)
        sentences.append(sentence)
    sentences.append(f"How many {item} does {name} have now?")
    return {"question": " ".join(sentences), "answer": str(total)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument("--num-problems", type=int, default=60)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    for index in range(args.num_problems):
        print(json.dumps(problem(rng, 2 if index % 2 == 0 else 3)))


if __name__ == "__main__":
    main()
