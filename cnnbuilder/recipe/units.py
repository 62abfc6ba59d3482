"""Human-readable counts and citations (no TensorFlow import, so `cnnbuilder list` stays fast)."""

import re


def format_count(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return str(int(value))


def short_reference(reference: str) -> str:
    """`He et al. 2016, Table 6: Deep Residual Learning for Image Recognition` from a
    recipe's `reference` ("Authors. Title. Venue Year. Table/Fig./Section ...")."""
    text = " ".join(str(reference or "").split())
    parts = text.split(". ")
    if len(parts) < 2:
        return text
    authors = [a.strip() for a in parts[0].split(",") if a.strip()]
    if len(authors) > 2:
        who = f"{authors[0]} et al."
    else:
        who = " & ".join(authors)
    title = parts[1].rstrip(".")
    rest = ". ".join(parts[2:])
    year = re.search(r"\b(?:19|20)\d\d\b", rest)
    located = rest.split(";")[0]  # what follows a ';' is usually about another work
    where = ""
    for pattern in (r"Table \d+", r"Fig\. \d+\w*", r"Section [\w.]*\w"):
        match = re.search(pattern, located)
        if match:
            where = match.group(0)
            break
    head = who + (f" {year.group(0)}" if year else "") + (f", {where}" if where else "")
    return f"{head}: {title}"
