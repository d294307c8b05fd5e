"""`adderconv energy --markdown`: the Mermaid chart block is structurally valid `xychart-beta`, and with
`--baseline` a "what grew" section comes first."""
import json
import math
import re

import pytest


_STRING = r'"[^"\n]*"'
_NUMBER = r"-?(?:\d+(?:\.\d*)?|\.\d+)"


def _numbers(text: str) -> list[float]:
    items = [s.strip() for s in text.split(",")]
    assert all(re.fullmatch(_NUMBER, s) for s in items), text    # plain decimals: no exponent, nan or inf
    return [float(s) for s in items]


def parse_xychart(block: str) -> dict:
    """A structural parser of the subset of Mermaid's xychart-beta grammar we emit (and the docs define):
    header, optional title, categorical x-axis, optional y-axis with a range, then bar/line data lists."""
    lines = [ln.strip() for ln in block.strip().splitlines() if ln.strip()]
    assert lines[0] in ("xychart-beta", "xychart-beta horizontal"), lines[0]
    chart = {"title": None, "x": None, "y": None, "series": []}
    for ln in lines[1:]:
        if m := re.fullmatch(rf"title ({_STRING})", ln):
            assert chart["title"] is None and not chart["series"]
            chart["title"] = m.group(1)[1:-1]
        elif m := re.fullmatch(rf"x-axis (?:{_STRING} )?\[(.*)\]", ln):
            assert chart["x"] is None and not chart["series"]
            labels = re.findall(_STRING, m.group(1))
            assert ", ".join(labels) == m.group(1).strip(), "x-axis: a list of quoted labels"
            chart["x"] = [s[1:-1] for s in labels]
        elif m := re.fullmatch(rf"y-axis ({_STRING})(?: ({_NUMBER}) --> ({_NUMBER}))?", ln):
            assert chart["y"] is None and not chart["series"]
            chart["y"] = (m.group(1)[1:-1], *(float(v) for v in m.groups()[1:] if v is not None))
        elif m := re.fullmatch(r"(bar|line) \[(.*)\]", ln):
            chart["series"].append((m.group(1), _numbers(m.group(2))))
        else:
            raise AssertionError(f"not xychart-beta syntax: {ln!r}")
    assert chart["x"] and chart["series"], "an x-axis and at least one data series"
    for kind, values in chart["series"]:
        assert len(values) == len(chart["x"]), (kind, len(values), len(chart["x"]))
        assert all(math.isfinite(v) and v >= 0 for v in values)
    if chart["y"] is not None and len(chart["y"]) == 3:
        lo, hi = chart["y"][1:]
        assert lo == 0 and hi >= max(v for _, vs in chart["series"] for v in vs)
    return chart


def mermaid_blocks(markdown: str) -> list[str]:
    blocks = re.findall(r"^```mermaid\n(.*?)^```$", markdown, flags=re.S | re.M)
    assert markdown.count("```") == 2 * len(blocks), "every fence is closed"
    return blocks


def test_default_job_chart_is_before_bars_and_after_line(energy, tmp_path):
    md = tmp_path / "r.md"
    assert energy("--markdown", str(md))[0] == 0
    text = md.read_text()
    assert text.startswith("### Energy: `resnet20_adder`")             # no baseline: no "what grew" section
    (block,) = mermaid_blocks(text)
    chart = parse_xychart(block)
    assert [k for k, _ in chart["series"]] == ["bar", "line"]
    assert "bars resnet20, line resnet20_adder" in chart["title"] and chart["y"][0] == "uJ"
    bars, line = (v for _, v in chart["series"])
    assert all(after < before for before, after in zip(bars, line))   # every top layer got cheaper
    assert 1 <= len(chart["x"]) <= 8 and all(name.startswith("layer") for name in chart["x"])


def test_single_model_chart_and_its_numbers_match_the_layers(energy, tmp_path):
    from adderconv.analysis import analyze

    md = tmp_path / "r.md"
    assert energy("lenet5_bn", "--markdown", str(md))[0] == 0
    (block,) = mermaid_blocks(md.read_text())
    chart = parse_xychart(block)
    assert [k for k, _ in chart["series"]] == ["bar"]
    energy = {le.name: le.energy_pj / 1e6 for le in analyze("lenet5_bn").layers}   # the chart is in uJ
    for name, v in zip(chart["x"], chart["series"][0][1]):
        assert v == pytest.approx(energy[name], abs=6e-4)
    top = sorted(energy.values(), reverse=True)[:len(chart["x"])]
    assert sorted(chart["series"][0][1], reverse=True) == pytest.approx(top, abs=6e-4)


def test_baseline_puts_what_grew_first_and_charts_baseline_vs_now(energy, tmp_path):
    base, md = tmp_path / "base.json", tmp_path / "r.md"
    assert energy("lenet5_bn_adder", "--json", str(base))[0] == 0
    data = json.loads(base.read_text())             # the same model file when it was still an adder net
    data["model"] = "lenet5_bn"
    was_adder = tmp_path / "was_adder.json"
    was_adder.write_text(json.dumps(data))
    code, _, _ = energy("lenet5_bn", "--baseline", str(was_adder), "--markdown", str(md))
    assert code == 1
    text = md.read_text()
    assert text.startswith("### What grew against the baseline")
    head = text[:text.index("### Energy:")]
    assert "**Regression**" in head and "| **grew** | `mul` |" in head and "| ok | `add` |" in head
    assert "Layers whose energy grew" in head and "| `4` |" in head
    (block,) = mermaid_blocks(text)
    chart = parse_xychart(block)
    assert "bars baseline, line lenet5_bn" in chart["title"]
    # within the limit: the same section says so
    code, _, _ = energy("lenet5_bn_adder", "--baseline", str(base), "--markdown", str(md))
    assert code == 0
    text = md.read_text()
    assert text.startswith("### What grew") and "**No regression**" in text and "No layer's energy grew" in text


def test_labels_are_quoted_safely_and_bad_series_are_refused():
    from adderconv.analysis.mermaid import xychart

    block = xychart('a "quoted" title', ['say "hi"', "two words", "x,y"], [("bar", [1, 2.5, 0.0001])], "nJ", 3)
    chart = parse_xychart(mermaid_blocks(block)[0])
    assert chart["x"] == ["say 'hi'", "two words", "x,y"] and chart["series"] == [("bar", [1.0, 2.5, 0.0])]
    with pytest.raises(ValueError):
        xychart("t", ["a", "b"], [("bar", [1.0])])
    with pytest.raises(ValueError):
        xychart("t", ["a"], [("bar", [math.nan])])
    with pytest.raises(ValueError):
        xychart("t", ["a"], [("pie", [1.0])])


def test_the_parser_rejects_broken_charts():
    for bad in ('xychart\n x-axis ["a"]\n bar [1]', 'xychart-beta\n x-axis ["a", "b"]\n bar [1]',
                'xychart-beta\n x-axis ["a"]\n bar [1e3]', 'xychart-beta\n x-axis [a]\n bar [1]',
                'xychart-beta\n x-axis ["a"]\n bar [inf]', 'xychart-beta\n x-axis ["a"]\n pie [1]'):
        with pytest.raises(AssertionError):
            parse_xychart(bad)
