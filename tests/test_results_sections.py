"""Marker-delimited generated sections of a Markdown file."""
from benchmarks.results_sections import keep_sections, markers, read_sections, replace_section, write_section

DOC = "# Results\n\nhand text\n\n<!-- experiment:a:start -->\nold a\n<!-- experiment:a:end -->\n\ntail\n"


def test_replacing_a_section_changes_only_its_body():
    updated = replace_section(DOC, "a", "new a")
    assert updated == DOC.replace("old a", "new a")


def test_a_missing_section_is_appended_after_the_text():
    updated = replace_section(DOC, "b", "body b")
    assert updated.startswith(DOC.rstrip("\n"))
    assert updated.endswith("<!-- experiment:b:start -->\nbody b\n<!-- experiment:b:end -->\n")
    assert read_sections(updated) == {"a": "old a", "b": "body b"}


def test_writing_the_same_section_twice_is_idempotent(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text(DOC)
    write_section(path, "b", "body b")
    once = path.read_text()
    write_section(path, "b", "body b")
    assert path.read_text() == once


def test_other_sections_survive_a_write(tmp_path):
    path = tmp_path / "RESULTS.md"
    write_section(path, "a", "A")
    write_section(path, "b", "B")
    write_section(path, "a", "A2")
    assert read_sections(path.read_text()) == {"a": "A2", "b": "B"}


def test_a_whole_file_rewrite_keeps_the_sections_it_lacks():
    new = "# Results\n\nregenerated\n"
    kept = keep_sections(DOC, new)
    assert kept.startswith(new.rstrip("\n")) and read_sections(kept) == {"a": "old a"}
    assert keep_sections(DOC, replace_section(new, "a", "fresh")) == replace_section(new, "a", "fresh")


def test_markers_name_the_section():
    assert markers("captions") == ("<!-- experiment:captions:start -->", "<!-- experiment:captions:end -->")
