"""Every relative link in the project's Markdown pages points at a file in the repository."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT

PAGES = ["README.md", "experiments/README.md", "benchmarks/README.md",
         *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").glob("*.md"))),
         *(str(p.relative_to(ROOT)) for p in sorted(
             (ROOT / "experiments" / "results").glob("*/report.md")))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(text: str) -> list[str]:
    links = [m.group(1).split("#")[0] for m in LINK.finditer(text)]
    return [t for t in links if t and not re.match(r"[a-z]+:", t)]


def test_relative_links_are_found() -> None:
    text = "see [a](x/y.png), [b](https://example.org), [c](#part), ![d](e.md#s)"
    assert relative_links(text) == ["x/y.png", "e.md"]


@pytest.mark.parametrize("page", PAGES)
def test_links_resolve(page: str) -> None:
    path = ROOT / page
    missing = [t for t in relative_links(path.read_text())
               if not (path.parent / t).exists()]
    assert not missing, f"{page} links to missing files: {missing}"


def test_readme_links_every_experiment_plot() -> None:
    readme = (ROOT / "README.md").read_text()
    pngs = sorted((ROOT / "experiments" / "results").glob("*/*.png"))
    assert pngs
    for name in {p.parent.name for p in pngs}:
        assert f"experiments/results/{name}/report.md" in readme
        assert re.search(rf"experiments/results/{re.escape(name)}/\w+\.png", readme), name


CODE_PATH = re.compile(r"`((?:flowerbed|tests|benchmarks|examples|experiments)/[\w./-]+\.\w+)`")


@pytest.mark.parametrize("page", PAGES)
def test_quoted_repository_paths_exist(page: str) -> None:
    """A file named in backticks (`tests/x/test_y.py`) exists: files move, prose stays."""
    path = ROOT / page
    missing = sorted({p for p in CODE_PATH.findall(path.read_text())
                      if not (ROOT / p).exists() and not (path.parent / p).exists()})
    assert not missing, f"{page} names missing files: {missing}"


# notes kept outside the repository, and the tracker's issue numbers: a reader has neither
OUTSIDE = re.compile(r"\.\./shared|DESIGN\.md|FLOWER-NOTES|ALGORITHMS\.md|\bissues? #?\d+",
                     re.IGNORECASE)
STANDALONE = [*PAGES, *(str(p.relative_to(ROOT)) for d in ("flowerbed", "benchmarks", "tests",
                                                          "experiments", "examples")
                        for p in sorted((ROOT / d).rglob("*"))
                        if p.suffix in (".py", ".toml", ".md") and p.is_file())]


def test_outside_references_are_caught() -> None:
    for text in ("see ../shared/DESIGN.md", "FLOWER-NOTES 3", "as in ALGORITHMS.md",
                 "Experiment 1 (issue 5)", "issues 8"):
        assert OUTSIDE.search(text), text
    assert not OUTSIDE.search("the design of the issue tracker; 5 issues")


def test_the_project_stands_alone() -> None:
    """README, docs, reports, experiment files and code cite nothing outside the repository
    (this file excepted: it names what it looks for)."""
    found = {page: OUTSIDE.findall((ROOT / page).read_text(errors="replace"))
             for page in sorted(set(STANDALONE)) if page != "tests/test_docs_links.py"}
    assert not {k: v for k, v in found.items() if v}
