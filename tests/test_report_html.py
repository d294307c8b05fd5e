"""`adderconv energy --html`: one self-contained page (nothing fetched at view time) that shows every layer of
the JSON report and, above the charts, what was not counted. Checked by parsing, not with a browser."""
import json
import re
import sys
import textwrap
from html.parser import HTMLParser

import pytest
import torch

from adderconv.cli import main

pytest.importorskip("matplotlib")


class Page(HTMLParser):
    """Every tag with its attributes, the text of <style>, and the layer table's rows (cell texts)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.styles, self.rows = [], [], []
        self._in, self._table, self._row, self._cell = None, 0, None, None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in = tag
        if tag == "table" and "sortable" in (dict(attrs).get("class") or ""):
            self._table = 1
        elif tag == "tr" and self._table:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self.rows.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = 0
        self._in = None

    def handle_data(self, data):
        if self._in == "style":
            self.styles.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    return page


def assert_self_contained(text: str) -> None:
    page = parse(text)
    external = re.compile(r"^\s*(https?:)?//", re.I)
    for tag, attrs in page.tags:
        for name, value in attrs.items():
            if name in ("src", "href", "xlink:href", "action", "poster", "data"):
                assert value is not None and not external.match(value), (tag, name, value)
                assert value.startswith("#") or value.startswith("data:"), (tag, name, value)
        assert not (tag == "link" and attrs.get("rel") == "stylesheet"), "an external style sheet"
        assert not (tag == "script" and "src" in attrs), "an external script"
        for value in attrs.values():   # style="...url(...)" on any element
            assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", value or "", re.I), (tag, value)
    css = "".join(page.styles)
    assert "@import" not in css and not re.search(r"url\(\s*['\"]?\s*(https?:)?//", css, re.I)
    # nothing anywhere in the file that a browser would resolve against the network
    assert not re.search(r"(src|href)\s*=\s*['\"]?\s*(https?:)?//", text, re.I)
    assert not re.search(r"url\(\s*['\"]?\s*https?:", text, re.I)


def test_compare_page_is_self_contained_and_lists_every_layer_of_the_json(energy, tmp_path):
    page, js = tmp_path / "r.html", tmp_path / "r.json"
    code, _, _ = energy("lenet5_bn_adder", "--compare", "lenet5_bn", "--memory", "sram_8kb",
                     "--html", str(page), "--json", str(js))
    assert code == 0
    text = page.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert_self_contained(text)
    data = json.loads(js.read_text())
    rows = parse(text).rows
    width = len(re.findall(r"<th[ >]", text[text.index('<table class="sortable"'):]))
    assert {len(row) for row in rows} == {width}          # one cell per column in every row: sorting needs it
    mine = [row for row in rows if "not in this model" not in row]
    assert [row[1] for row in mine] == [le["name"] or "(model)" for le in data["layers"]]
    for row, le in zip(mine, data["layers"]):
        assert row[2] == le["type"] and row[3] == f"{le['precision']}/{le['accumulator']}"   # operand/accumulator
    for part in ("lenet5_bn vs lenet5_bn_adder", "Compute vs memory", "memory (sram_8kb)", "Energy by operator class",
                 "Energy per layer, execution order", data["conventions"][0]):
        assert part in text, part
    assert text.count("<svg") == 3                         # layers, operator classes, compute vs memory


def test_default_job_page_shows_the_demo_at_two_precisions(energy, tmp_path):
    page = tmp_path / "r.html"
    assert energy("--html", str(page))[0] == 0
    text = page.read_text(encoding="utf-8")
    assert_self_contained(text)
    assert "ResNet-20 on CIFAR: CNN vs AdderNet" in text and "energy fp32" in text and "energy int8" in text
    names = [row[1] for row in parse(text).rows]
    assert "layer3.2.conv2" in names and len(names) == len(set(names))


@pytest.fixture
def cumsum_model(tmp_path, monkeypatch):
    (tmp_path / "cummodel_html.py").write_text(textwrap.dedent("""
        import torch
        class M(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(4, 3)
            def forward(self, x):
                return torch.cumsum(self.fc(x).flatten(1), 1)
        def make():
            return M()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import cummodel_html

    path = tmp_path / "m.pt"
    torch.save(cummodel_html.make().state_dict(), path)
    return path


def test_unsupported_and_ignored_ops_come_before_the_charts(energy, cumsum_model, tmp_path):
    page, js = tmp_path / "m.html", tmp_path / "m.json"
    code, _, _ = energy(str(cumsum_model), "--arch", "cummodel_html:make", "--input-shape", "2,4",
                     "--html", str(page), "--json", str(js))
    assert code == 0
    text = page.read_text(encoding="utf-8")
    data = json.loads(js.read_text())
    assert data["unsupported"] and data["ignored"]
    first_chart = text.index("<svg")
    for op in [*data["unsupported"], *data["ignored"]]:
        assert -1 < text.find(op) < first_chart, op
    assert 'class="note warn"' in text[:first_chart] and "not counted (no handle)" in text[:first_chart]
    # the layer that ran the op says so in its row too
    row = next(r for r in parse(text).rows if r[1] == "(model)")
    assert "aten::cumsum" in row[-1]


def test_page_is_deterministic(energy, tmp_path):
    a, b = tmp_path / "a.html", tmp_path / "b.html"
    assert energy("lenet5_bn_adder", "--html", str(a))[0] == 0
    assert energy("lenet5_bn_adder", "--html", str(b))[0] == 0
    assert a.read_bytes() == b.read_bytes()


def test_missing_matplotlib_is_one_line_naming_the_extra(energy, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)       # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, out, err = energy("lenet5_bn", "--html", str(tmp_path / "x.html"))
    assert code == 2 and not (tmp_path / "x.html").exists()
    assert err.startswith("error: ") and err.count("\n") == 1 and "pip install 'adderconv[report]'" in err
    assert out == ""                                           # it failed before any work was printed


def test_layers_align_by_name_with_inserted_layers_in_place():
    from adderconv.analysis.energy import LayerEnergy
    from adderconv.analysis.counts import Tally
    from adderconv.analysis.layer_views import align

    def layers(*names):
        return [LayerEnergy(n, "T", "fp32", Tally(add=1), 1.0) for n in names]

    pairs = align(layers("a", "b", "bn", "c"), layers("a", "b", "c", "d"))
    assert [(x and x.name, y and y.name) for x, y in pairs] == [("a", "a"), ("b", "b"), ("bn", None), ("c", "c"),
                                                                (None, "d")]


def test_kind_split_adds_up_to_each_layer_even_at_mixed_precision():
    from adderconv.analysis import analyze
    from adderconv.analysis.layer_views import kind_split, mixed_precision

    r = analyze("lenet5_bn", layer_precision={"4": "int8"})
    assert mixed_precision(r)
    for le in r.layers:
        split = kind_split(r, le)
        assert sum(split.values()) == pytest.approx(le.energy_pj, rel=1e-12, abs=1e-12)
        assert min(split.values()) >= 0
    conv = next(le for le in analyze("lenet5_bn").layers if le.name == "0")
    assert kind_split(analyze("lenet5_bn"), conv)["mul"] == pytest.approx(conv.mul * 3.7)   # exact at one precision


@pytest.mark.parametrize("bad", ['<img src="https://example.org/x.png">', '<script src="//cdn.example/x.js"></script>',
                                 '<link rel="stylesheet" href="http://example.org/s.css">',
                                 '<div style="background:url(https://example.org/b.png)"></div>',
                                 "<style>@import 'https://example.org/s.css';</style>",
                                 '<svg><image xlink:href="http://example.org/i.png"/></svg>'])
def test_the_self_containment_check_catches_external_references(bad):
    with pytest.raises(AssertionError):
        assert_self_contained(f"<!DOCTYPE html><html><body>{bad}</body></html>")


def test_convert_writes_the_before_after_page(tmp_path, capsys, monkeypatch):
    page = tmp_path / "c.html"
    monkeypatch.setattr(sys, "argv", ["adderconv", "convert", "lenet5_bn", "-o", str(tmp_path / "m.safetensors"),
                                      "--html", str(page)])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code in (0, None)
    assert f"wrote {page}" in capsys.readouterr().out
    text = page.read_text(encoding="utf-8")
    assert_self_contained(text)
    assert "before vs after conversion (input 1x1x32x32)" in text and "original vs converted" in text
    rows = parse(text).rows
    assert any(r[2] == "AdderConv2d" for r in rows) and "energy in original" in text


def test_energy_by_operator_class_adds_up_and_is_exact_at_one_precision():
    from adderconv.analysis import analyze
    from adderconv.analysis.layer_views import class_split

    for r in (analyze("lenet5_bn_adder"), analyze("lenet5_bn", layer_precision={"4": "int8"})):
        split = class_split(r)
        assert set(split) == set(r.by_category)
        assert sum(sum(v.values()) for v in split.values()) == pytest.approx(r.totals.energy_pj, rel=1e-12)
    r = analyze("lenet5_bn_adder")
    conv, adder = r.by_category["conv"], r.by_category["adder"]
    assert sum(class_split(r)["conv"].values()) == pytest.approx(conv["mul"] * 3.7 + conv["acc"] * 0.9)
    assert class_split(r)["adder"] == pytest.approx({"mul": 0.0, "add": adder["add"] * 0.9, "acc": adder["acc"] * 0.9,
                                                     "cmp": 0.0, "other": 0.0})
