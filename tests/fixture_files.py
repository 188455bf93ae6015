"""Where the real Flex statements used by the tests live.

Files whose licence allows redistribution (MIT, Apache-2.0, EPL-1.0) are copied into
``tests/fixtures/flex/`` (see its NOTICE.md); the others (GPL/AGPL) are read from the shared
fixture set beside the project, ``../shared/fixtures/flex/``, which a user's clone does not have:
tests of those skip with a reason then (CI has the folder and runs them all).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_TREE = ROOT / "tests" / "fixtures" / "flex"
SHARED = (ROOT / ".." / "shared" / "fixtures" / "flex").resolve()

PUBLIC_FLEX_DIR = IN_TREE / "public"
"""The four public statements (all redistributable, always present)."""


def corpus_files() -> list[Path]:
    """Every corpus statement: in-tree copies plus, when ``../shared`` exists, the shared files
    (a shared file with an in-tree copy is listed once). Sorted by name."""
    files = {p.name: p for p in (IN_TREE / "corpus").glob("*.xml")}
    for folder in ("corpus", "public"):
        for p in (SHARED / folder).glob("*.xml") if (SHARED / folder).is_dir() else ():
            files.setdefault(p.name, p)
    files.update({p.name: p for p in PUBLIC_FLEX_DIR.glob("*.xml")})
    return [files[name] for name in sorted(files)]


def shared_only_corpus_names() -> list[str]:
    """Names of corpus files that exist only in ``../shared`` (empty when it is absent)."""
    shared = SHARED / "corpus"
    if not shared.is_dir():
        return []
    in_tree = {p.name for p in (IN_TREE / "corpus").glob("*.xml")}
    return sorted(p.name for p in shared.glob("*.xml") if p.name not in in_tree)


def corpus_file(name: str) -> Path:
    """A corpus file by name: the in-tree copy, else the shared one; skips the calling test
    with a reason when the file is only in ``../shared`` and that folder is absent."""
    for folder in (IN_TREE / "corpus", PUBLIC_FLEX_DIR, SHARED / "corpus", SHARED / "public"):
        if (folder / name).is_file():
            return folder / name
    pytest.skip(
        f"{name} is not redistributable (GPL/AGPL) and ../shared/fixtures/flex is absent: "
        "this test runs in CI, where the shared fixtures sit beside the project"
    )
