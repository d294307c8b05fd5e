"""Issue 28 (6): names from a file are untrusted text in every view (terminal, Markdown, Mermaid, HTML, JSON,
one-line errors). A hostile ONNX file names its nodes with a carriage return that would close the Mermaid
block, a Mermaid ``%%{init}%%`` directive, rich markup (a link; ``[/]``, which crashed rich), terminal escape
sequences (clear screen; OSC 52, a clipboard write) and Markdown/HTML (a comment that hides the rest of a PR
comment, forged table cells)."""
import io
import json
import re

import pytest
from rich.console import Console
from torch import nn

from adderconv import untrusted
from adderconv.errors import AdderconvError


HOSTILE = [
    "a\r```\n[link=https://evil.example]click[/link]",
    '%%{init: {"theme": "forest"}}%% x"y',
    "[/]",
    "b\x1b]52;c;aGVsbG8=\x07\x1b[2J<!-- hidden",
    "| **No regression** | `x` |",
]
ESCAPES = ("\x1b", "\x07", "\r", "\x9b", "\u202e")


def _hostile_onnx(path):
    """Conv -> Relu per hostile name: every layer has energy, so every name reaches every view."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper

    w = helper.make_tensor("w", T.FLOAT, [3, 3, 3, 3], [0.1] * 81)
    nodes, prev = [], "x"
    for i, name in enumerate(HOSTILE):
        nodes += [helper.make_node("Conv", [prev, "w"], [f"c{i}"], name=name, pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev = f"r{i}"
    g = helper.make_graph(nodes, "hostile", [helper.make_tensor_value_info("x", T.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info(prev, T.FLOAT, None)], initializer=[w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture()
def hostile(tmp_path):
    return _hostile_onnx(tmp_path / "hostile.onnx")


@pytest.fixture()
def report(hostile):
    from adderconv.analysis import analyze

    return analyze(str(hostile))


# --- the sanitisers ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text", HOSTILE)
def test_plain_is_one_printable_line(text):
    out = untrusted.plain(text)
    assert out.isprintable() and not any(c in out for c in ESCAPES) and untrusted.plain(out) == out


def test_plain_drops_whole_escape_sequences_not_just_their_introducer():
    assert untrusted.plain("a\x1b[31mred\x1b[0m \x1b]8;;https://x\x07link\x1b]8;;\x1b\\ \x9b2J") == "ared link "


@pytest.mark.parametrize("text", HOSTILE)
def test_console_text_prints_as_itself(text):
    buf = io.StringIO()
    Console(file=buf, width=400, color_system=None).print(untrusted.console(text), highlight=False)
    assert buf.getvalue() == untrusted.plain(text) + "\n"


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_and_code_hold_no_html_link_or_cell_break(text):
    for out in (untrusted.markdown(text), untrusted.code(text)):   # in a code span, < is literal text
        assert "|" not in out.replace("\\|", "") and "\r" not in out and "\n" not in out
    assert "<" not in untrusted.markdown(text)
    assert "](" not in untrusted.markdown(text).replace("\\]", "")


def test_code_span_outlasts_the_backticks_inside():
    assert untrusted.code("a`b``c") == "```a`b``c```"


@pytest.mark.parametrize("text", HOSTILE)
def test_mermaid_label_is_one_quoted_string_without_directives(text):
    out = untrusted.mermaid(text)
    assert out[0] == out[-1] == '"' and '"' not in out[1:-1] and "%%" not in out and "\n" not in out
    assert "\r" not in out and "#" not in out and "<" not in out


def test_json_from_a_file_is_bounded_in_depth():
    assert untrusted.json_loads('{"a": [1, {"b": 2}]}', "x") == {"a": [1, {"b": 2}]}
    for text in ("[" * 100000 + "]" * 100000, "[" * 40 + "]" * 40, '{"a": NaN}', "{"):
        with pytest.raises(AdderconvError, match="^x: "):
            untrusted.json_loads(text, "x")


# --- views this change fixed --------------------------------------------------------------------------------------

def test_layer_names_enter_the_report_as_plain_lines(report):
    names = [le.name for le in report.layers]
    assert [n for n in names if not n.startswith("relu")] == [untrusted.plain(h) for h in HOSTILE]


def test_json_and_html_hold_no_escape_sequence(report):
    from adderconv.analysis.export import to_json
    from adderconv.analysis.html_report import to_html

    text = to_json(report)
    assert not any(c in json.loads(text)["layers"][0]["name"] for c in ESCAPES)
    page = to_html(report)
    assert not any(c in page for c in ESCAPES) and "<!-- hidden" not in page and "[/]" in page


def test_mermaid_chart_is_one_block_with_no_directive(report):
    from adderconv.analysis.mermaid import energy_chart

    chart = energy_chart(report, top=10)
    lines = chart.splitlines()
    assert lines[0] == "```mermaid" and lines[-1] == "```" and chart.count("```") == 2, chart
    assert "\r" not in chart and "%%" not in chart and not any(c in chart for c in ESCAPES)
    assert sum("x-axis" in ln for ln in lines) == 1 and len(lines) == 7


def test_convert_table_shows_hostile_node_names_as_text(hostile, tmp_path, monkeypatch):
    from adderconv.converters import command

    monkeypatch.setattr(command, "render_savings", lambda *a, **k: None)   # the energy views: tested below
    buf = io.StringIO()
    opts = command.ConvertOptions(model=str(hostile), output=str(tmp_path / "out.onnx"))
    assert command.run_convert(opts, Console(file=buf, width=300, color_system=None)) == 0
    out = buf.getvalue()
    assert "[/]" in out and "[link=https://evil.example]" in out and not any(c in out for c in ESCAPES)


def test_module_names_in_the_conversion_table_are_not_markup():
    from adderconv.converters import convert
    from adderconv.converters.report import conversion_report
    from adderconv.converters.views import render_conversion

    net = nn.Sequential()
    net.add_module("stem", nn.Conv2d(3, 8, 3))
    net.add_module("[/]", nn.Conv2d(8, 8, 3))
    net.add_module("[link=https://evil]x[/link]\x1b[2J", nn.Conv2d(8, 8, 3))
    net.add_module("head", nn.Conv2d(8, 8, 3))
    buf = io.StringIO()
    render_conversion(conversion_report(convert(net)), Console(file=buf, width=300, color_system=None))
    assert "[/]" in buf.getvalue() and "[link=https://evil]x[/link]" in buf.getvalue()
    assert "\x1b" not in buf.getvalue()


def test_convert_of_a_hostile_onnx_file_runs_to_the_end(run_cli, hostile, tmp_path):
    # crashed on '[/]' with a traceback after writing its -o output
    code, out, err = run_cli("convert", str(hostile), "-o", str(tmp_path / "out.onnx"))
    assert code == 0 and "[/]" in out and "before vs after" in out and "wrote" in out, err
    assert not any(c in out for c in ESCAPES)


def test_one_line_errors_print_no_escape_sequence(run_cli, tmp_path):
    code, out, err = run_cli("energy", str(tmp_path / "x\x1b[2J\x1b]52;c;aGk=\x07\r\nerror: forged.onnx"))
    assert code == 2 and len(err.strip().splitlines()) == 1 and not any(c in err for c in ESCAPES), err


# --- the energy views: analysis/render.py and export.py ---------------------------------------------------------

def test_energy_console_shows_hostile_names_as_text(energy, hostile):   # analysis/render.py
    code, out, err = energy(str(hostile), "--all-layers")
    assert code == 0, err
    assert "[/]" in out and "[link=https://evil.example]" in out and not any(c in out for c in ESCAPES)




def test_markdown_report_escapes_names(report):   # analysis/export.py
    from adderconv.analysis.export import to_markdown

    md = to_markdown(report, top=10)
    outside = re.sub(r"^```mermaid$.*?^```$", "", md, flags=re.S | re.M)    # the chart: tested above
    outside = re.sub(r"(`+)(?!`).*?(?<!`)\1(?!`)", "", outside)          # what is not inside a code span
    assert "<!--" not in outside and "[link=" not in outside.replace("\\[link=", "") and "\r" not in md
    assert not any(c in md for c in ESCAPES)
    rows = [ln for ln in md.splitlines() if ln.startswith("|") and (" Conv " in ln or "relu" in ln)]
    cells = {ln.replace("\\|", "").count("|") for ln in rows}
    assert len(rows) >= 5 and len(cells) == 1, rows     # the layer table: no name opened a cell
    assert "**No regression**" not in outside.replace("\\*\\*No regression\\*\\*", "")   # the chart quotes it
