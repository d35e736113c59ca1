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
