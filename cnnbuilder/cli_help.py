"""`cnnbuilder help [TOPIC]`: the guides that messages refer to, printed from the package
(they ship in the wheel as `cnnbuilder/_docs`; a source checkout reads `docs/`)."""

from __future__ import annotations

from pathlib import Path

from cnnbuilder.errors import UsageError

_PACKAGE_DIR = Path(__file__).resolve().parent
# topic -> file: the names messages use (`cnnbuilder help fine-tuning`).
TOPICS = {
    "fine-tuning": "fine_tuning.md",
    "distributed-training": "distributed_training.md",
    "distributed-tuning": "distributed_tuning.md",
    "known-issues": "known_issues.md",
    "limits": "limits.md",
    "pretrained": "pretrained.md",
    "recipes": "recipes.md",
    "segmentation": "segmentation.md",
    "training": "training.md",
}


def docs_dir() -> Path:
    """`cnnbuilder/_docs` in an installed wheel, `docs/` in a source checkout."""
    installed = _PACKAGE_DIR / "_docs"
    return installed if installed.is_dir() else _PACKAGE_DIR.parent / "docs"


def topic_text(topic: str) -> str:
    """The guide of `topic` (also accepted: its file name, `fine_tuning.md`)."""
    by_file = {file: name for name, file in TOPICS.items()}
    name = topic.removeprefix("docs/")
    name = by_file.get(name, by_file.get(f"{name}.md", name)).replace("_", "-")
    if name not in TOPICS:
        raise UsageError(f"help: no topic {topic!r}; topics: {', '.join(TOPICS)}.")
    return (docs_dir() / TOPICS[name]).read_text(encoding="utf-8")


def cmd_help(args) -> int:
    """`cnnbuilder help`: the topics; `cnnbuilder help TOPIC`: that guide."""
    if not args.topic:
        print("cnnbuilder help TOPIC prints a guide; topics:")
        for name, file in TOPICS.items():
            title = next((line.lstrip("# ").strip() for line in
                          (docs_dir() / file).read_text(encoding="utf-8").splitlines()
                          if line.startswith("#")), "")
            print(f"  {name:<22} {title}")
        return 0
    print(topic_text(args.topic))
    return 0
