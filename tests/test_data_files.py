"""The GLUE files carried in data/glue match the row counts and sha256 of their README."""

import csv
import hashlib
import re

import pytest

from analysis import data

GLUE = data.ROOT / "data" / "glue"
ROW = re.compile(r"\| (\S+\.tsv) \| (\d+) \| (\d+) \| ([0-9a-f]{64}) \|")
LISTED = [m.groups() for m in ROW.finditer((GLUE / "README.md").read_text())]


def test_readme_lists_every_file():
    assert sorted(f for f, *_ in LISTED) == sorted(str(p.relative_to(GLUE)) for p in GLUE.rglob("*.tsv"))
    assert len(LISTED) == 11


@pytest.mark.parametrize("name,rows,size,sha", LISTED, ids=[f for f, *_ in LISTED])
def test_file_matches_readme(name, rows, size, sha):
    path = GLUE / name
    blob = path.read_bytes()
    assert len(blob) == int(size)
    assert hashlib.sha256(blob).hexdigest() == sha
    lines = list(csv.reader(blob.decode("utf-8").splitlines(), delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(lines) - (not name.startswith("CoLA/")) == int(rows)


def test_default_glue_dir_is_inside_the_repository():
    assert data.DEFAULT_GLUE_DIR == GLUE and data.DEFAULT_GLUE_DIR.is_relative_to(data.ROOT)
    assert len(data.load_task("RTE", glue=None).dev) == 277
