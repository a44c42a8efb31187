"""The project's documentation: the site builds in strict mode (a broken link or anchor
between pages fails), the README is a front door whose links all land, every command is on
the CLI page, and nothing points outside the repository for a contract."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from markdown.extensions.toc import slugify

from framesink.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
MKDOCS = Path(sys.executable).with_name("mkdocs")


def build(project: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(MKDOCS), "build", "--strict", "--config-file", str(project / "mkdocs.yml"),
                           "--site-dir", str(site)], capture_output=True, text=True, timeout=120)


def test_the_site_builds_strictly(tmp_path):
    result = build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "site" / "storage" / "index.html").is_file()


def test_a_broken_link_or_anchor_fails_the_build(tmp_path):
    """The check above is a check: the same docs with one bad anchor and one missing page."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    with open(tmp_path / "docs" / "costs.md", "a") as page:
        page.write("\nSee [the key design](storage.md#no-such-section) and [prices](prices.md).\n")
    result = build(tmp_path, tmp_path / "site")
    assert result.returncode != 0
    assert "does not contain an anchor '#no-such-section'" in result.stderr
    assert "'prices.md', but the target is not found" in result.stderr


def headings(markdown: str) -> set[str]:
    inside_code = False
    found = set()
    for line in markdown.splitlines():
        if line.startswith("```"):
            inside_code = not inside_code
        elif not inside_code and line.startswith("#"):
            found.add(slugify(line.lstrip("#").strip(), "-"))
    return found


def test_the_readme_is_a_front_door_whose_links_land():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert readme.index("make demo") < readme.index("## Quickstart")  # the two commands come first
    links = re.findall(r"\]\(([^)#\s]+)(?:#([^)\s]+))?\)", readme)
    local = [(path, anchor) for path, anchor in links if not path.startswith(("http://", "https://"))]
    assert len(local) >= 10
    for path, anchor in local:
        target = ROOT / path
        assert target.is_file(), path
        if anchor:
            assert anchor in headings(target.read_text()), f"{path}#{anchor}"


def test_every_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.name != "index.md":
            assert f"(docs/{page.name}" in readme, page.name


def test_every_command_is_on_the_cli_page():
    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    page = (ROOT / "docs" / "cli.md").read_text()
    missing = [name for name in sub.choices if f"`framesink {name}" not in page]
    assert missing == []


def test_the_contracts_live_in_the_project():
    """Code and docs cite the project's own docs, never a file outside the repository."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    outside = re.compile(r"\.\./shared|DESIGN\.md|EVENTS\.md|VERIFY\.md")
    offenders = [name for name in tracked
                 if name.endswith((".py", ".md", ".toml", ".txt", ".yml", ".json")) and name != Path(__file__).name
                 and not name.endswith("test_docs.py") and (ROOT / name).is_file()
                 and outside.search((ROOT / name).read_text(errors="replace"))]
    assert offenders == []


def test_the_readme_shows_the_face_counter_whole_and_it_is_short():
    """The face-count analyzer the README shows is the file in analyzers/faces, and it stays
    within the 15 lines of user code the kit promises (blank lines and its docstring aside)."""
    source = (ROOT / "analyzers" / "faces" / "faces.py").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "```python\n" + source + "```" in readme
    code = [line for line in source.splitlines() if line.strip() and not line.startswith('"""')]
    assert len(code) <= 15
