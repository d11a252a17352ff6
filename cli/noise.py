"""Identifiers as real systems and people write them: valid values in many spellings, and the typos
that identity resolution has to see through. Every function draws from the `random.Random` it is given."""

from __future__ import annotations

import random
import re
import unicodedata

from cli.olist import pretty_city

_NOT_A_LETTER = re.compile(r"[^a-z]")


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def ascii_word(text: str) -> str:
    """`Conceição` → `conceicao` (for e-mail local parts and user names)."""
    return _NOT_A_LETTER.sub("", strip_accents(text).lower())


def cpf(rng: random.Random) -> str:
    """A random CPF with valid check digits (never all digits equal)."""
    digits = [rng.randrange(10) for _ in range(9)]
    while len(set(digits)) == 1:
        digits = [rng.randrange(10) for _ in range(9)]
    for size in (9, 10):
        total = sum(d * w for d, w in zip(digits, range(size + 1, 1, -1), strict=True))
        digits.append(total * 10 % 11 % 10)
    return "".join(map(str, digits))


def cpf_variant(document: str, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return document
    return f"{document[:3]}.{document[3:6]}.{document[6:9]}-{document[9:]}"


def phone_variant(national: str, rng: random.Random) -> str:
    """A phone (`DDD` + number) with or without +55 or a trunk 0, masked or not, and now and then a
    mobile without its 9th digit (as written before 2016)."""
    ddd, number = national[:2], national[2:]
    if len(number) == 9 and rng.random() < 0.08:
        number = number[1:]
    head, tail = number[:-4], number[-4:]
    match rng.randrange(9):
        case 0 | 1:
            return f"({ddd}) {head}-{tail}"
        case 2:
            return f"{ddd}{number}"
        case 3:
            return f"+55 {ddd} {head}-{tail}"
        case 4:
            return f"+55{ddd}{number}"
        case 5:
            return f"55{ddd}{number}"
        case 6:
            return f"0{ddd} {head} {tail}"
        case 7:
            return f"({ddd}){number}"
        case _:
            return f"+55 ({ddd}) {head}-{tail}"


def name_variant(name: str, rng: random.Random) -> str:
    """A name as typed: mostly right, else ALL CAPS, without accents, lower case, misspelt or shortened
    to first and last name."""
    r = rng.random()
    if r < 0.60:
        return name
    if r < 0.70:
        return (strip_accents(name) if rng.random() < 0.5 else name).upper()
    if r < 0.80:
        return strip_accents(name)
    if r < 0.84:
        return name.lower()
    if r < 0.92:
        return typo(name, rng)
    words = name.split()
    return f"{words[0]} {words[-1]}" if len(words) > 2 else name


def typo(name: str, rng: random.Random) -> str:
    """Swaps two neighbouring letters or drops one, inside a word of four letters or more."""
    words = name.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 4]
    if not candidates:
        return name
    i = rng.choice(candidates)
    word = words[i]
    k = rng.randrange(1, len(word) - 1)
    if rng.random() < 0.5:
        words[i] = word[:k] + word[k + 1] + word[k] + word[k + 2 :]
    else:
        words[i] = word[:k] + word[k + 1 :]
    return " ".join(words)


def email_variant(email: str, rng: random.Random) -> str:
    """Mostly as stored; sometimes capitalised as a phone keyboard does, or in capitals."""
    r = rng.random()
    if r < 0.04:
        local, _, domain = email.partition("@")
        return f"{local.capitalize()}@{domain}"
    if r < 0.05:
        return email.upper()
    return email


def city_variant(raw: str, rng: random.Random) -> str:
    """An Olist city (`sao paulo`) as a form would hold it: mostly `São Paulo`, sometimes as is or in
    capitals."""
    r = rng.random()
    if r < 0.70:
        return pretty_city(raw)
    if r < 0.85:
        return raw
    if r < 0.95:
        return pretty_city(raw).upper()
    return raw.upper()


def gender_variant(gender: str, rng: random.Random) -> str:
    if gender == "female":
        return rng.choice(("F", "feminino", "female", "Mulher"))
    return rng.choice(("M", "masculino", "male", "Homem"))
