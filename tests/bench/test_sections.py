"""Named result sections: each script rewrites only its own."""

from sparsec.bench.sections import read_section, write_section


def test_sections_are_independent(tmp_path):
    path = tmp_path / "RESULTS.md"
    write_section(path, "a", "first A")
    write_section(path, "b", "first B")
    write_section(path, "a", "second A")
    assert read_section(path, "a") == "second A"
    assert read_section(path, "b") == "first B"
    assert path.read_text().count("BEGIN sparsec section a") == 1
    assert read_section(path, "missing") is None
