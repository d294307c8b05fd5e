"""`graph`'s per-node counts are the analysis' counts (issue 27, item 7): BatchNorm nodes carry the 1 mul + 1 add
per element that `energy` counts, not 0 / 0, and every module's nodes sum to its energy layer."""
import torch

import adderconv
from adderconv.analysis import count_model
from adderconv.analysis.counts import additions
from adderconv.converters.graph import model_graph


def test_graph_counts_are_the_energy_counts():
    model = adderconv.get_model("resnet20_adder").eval()
    g = model_graph(model, (torch.randn(1, 3, 32, 32),))
    bn = g.nodes[next(n for n, d in g.nodes(data=True) if d["kind"] == "norm" and d["module"] == "bn1")]
    assert bn["counted"] and bn["mul"] == bn["add"] == 16 * 32 * 32            # one affine per element
    by_module: dict[str, list[int]] = {}
    for _, d in g.nodes(data=True):
        assert d["counted"], d
        acc = by_module.setdefault(d["module"], [0, 0])
        acc[0], acc[1] = acc[0] + d["mul"], acc[1] + d["add"]
    counts = count_model(model, (1, 3, 32, 32))
    assert {la.name: [la.tally["mul"], additions(la.tally)] for la in counts.layers} == \
        {k: v for k, v in by_module.items() if k in {la.name for la in counts.layers}}
    assert all(v == [0, 0] for k, v in by_module.items() if k not in {la.name for la in counts.layers})
    adders = [d for _, d in g.nodes(data=True) if d["kind"] == "adder"]
    assert len(adders) == 20 and all(d["mul"] == 0 and d["add"] > 0 for d in adders)   # 2 add per step
