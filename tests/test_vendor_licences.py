"""Every vendored browser file ships with its licence text (MIT, ISC and 0BSD require the notice)."""

from pathlib import Path

VENDOR = Path(__file__).resolve().parents[1] / "frontend" / "static" / "vendor"


def test_every_vendored_file_is_listed_with_a_licence_text():
    notices = (VENDOR / "LICENSES.md").read_text(encoding="utf-8")
    vendored = sorted(p.name for p in VENDOR.iterdir() if p.suffix == ".js")
    assert vendored, "no vendored files found"
    missing = [name for name in vendored if f"`{name}`" not in notices]
    assert not missing, f"vendored files without a licence entry: {missing}"
    # The bundle's own banner names the packages inside it; each needs its text here.
    banner = (VENDOR / "regl-scatterplot.js").read_text(encoding="utf-8").split("\n", 1)[0]
    for package in ("regl-scatterplot", "regl", "pub-sub-es"):
        assert package in banner
        assert f"## {package} " in notices, f"no licence text for {package}"
    assert notices.count("Permission is hereby granted") >= 9
