"""Where the real Flex statements used by the tests live.

Files whose licence allows redistribution (MIT, Apache-2.0, EPL-1.0) are copied into
``tests/fixtures/flex/`` (see its NOTICE.md); the others (GPL/AGPL) are read from the shared
fixture set beside the project, ``../shared/fixtures/flex/``, which a user's clone does not have:
tests of those skip with a reason then (CI has the folder and runs them all). The parametrized
corpus suites take ``corpus_params()``, which lists those files (``SHARED_ONLY``) as skips when
``../shared`` is absent; ``corpus_files()`` is the files present.
"""

from __future__ import annotations

from collections.abc import Callable
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


SHARED_ONLY: dict[str, str] = {
    "DeclaRenta__ibkr-autoconvert.xml": "GPL-3.0",
    "DeclaRenta__ibkr-options.xml": "GPL-3.0",
    "alens-importers__cash-balances.xml": "AGPL-3.0",
    "interactive-brokers-flex-rs__report_1.xml": "AGPL-3.0",
    "jal__IBKR_flex_sample.xml": "GPL-3.0",
    "jal__ibkr.xml": "GPL-3.0",
    "jal__ibkr_bond.xml": "GPL-3.0",
    "jal__ibkr_corp_actions.xml": "GPL-3.0",
}
"""The corpus files not copied here (name -> licence, from ../shared's SOURCES.md): without
``../shared`` they still appear in the parametrized suites, as skips naming why."""


def corpus_params(test_id: Callable[[Path], str] = lambda p: p.name) -> list:
    """``corpus_files()`` as ``pytest.param``s (ids ``test_id(path)``), sorted by name, plus a
    skipped param for every ``SHARED_ONLY`` file that is not there (``../shared`` absent), with
    its licence as the reason: a fresh clone shows each such file as a skip, not as nothing."""
    files = corpus_files()
    names = {p.name for p in files}
    params = {p.name: pytest.param(p, id=test_id(p)) for p in files}
    for name, licence in SHARED_ONLY.items():
        if name not in names:
            path = SHARED / "corpus" / name
            reason = (
                f"{name} is under {licence} (licence does not allow copying it into "
                "tests/fixtures); only in ../shared/fixtures/flex/corpus, which is absent here "
                "(CI has it)"
            )
            params[name] = pytest.param(
                path, id=test_id(path), marks=pytest.mark.skip(reason=reason)
            )
    return [params[name] for name in sorted(params)]


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
