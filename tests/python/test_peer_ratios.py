"""scripts/peer-ratios: the best W4A16 peer per row of the peers' markdown against mxmoe's bench JSON
(hand-written inputs in the tools' formats)."""
import json

import pytest
from script_module import load_script

PEERS_MD = """# Peer MXFP4 MoE on NVIDIA H200

## dsv4-flash (H=4096, I=2048, E=256, top-k 6)

| T | experts hit | read floor us | torch bf16 grouped_mm | triton_kernels matmul_ogs | vLLM Marlin MoE MXFP4 | Humming 0.1.19 MoE MXFP4 |
|---:|---:|---:|---:|---:|---:|---:|
| 1 | 6.0 | 30.3 | 20.0 (38%) | 177.0 (11%) | 66.5 (29%) | 57.6 (33%) |
| 1024 | 256.0 | 750.2 | 4400 / 70 (10%) | 1741 / 178 (26%) | 2144 / 144 (21%) | 1573 / 197 (28%) |

Streaming efficiency (read floor / time):

| T | triton_kernels matmul_ogs | vLLM Marlin MoE MXFP4 | Humming 0.1.19 MoE MXFP4 |
|---:|---:|---:|---:|
| 1 | 17% | 46% | 53% |
"""


@pytest.fixture(scope="module")
def ratios():
    return load_script("peer-ratios")


def test_peer_tables_read_both_cell_forms_and_stop_at_the_next_table(ratios):
    tables = ratios.peer_tables(PEERS_MD)
    assert list(tables) == ["dsv4-flash"]
    assert sorted(tables["dsv4-flash"]) == [1, 1024], "the efficiency table's rows are not times"
    assert tables["dsv4-flash"][1024]["Humming 0.1.19 MoE MXFP4"] == 1573.0


def test_best_peer_leaves_out_bf16_weights(ratios):
    row = ratios.peer_tables(PEERS_MD)["dsv4-flash"][1]
    assert ratios.best_peer(row) == (57.6, "Humming 0.1.19 MoE MXFP4"), "torch bf16 (20 us) is not a W4A16 peer"


def test_report_divides_the_best_peer_by_mxmoe(ratios, tmp_path):
    (tmp_path / "peers_h200.md").write_text(PEERS_MD)
    bench = tmp_path / "bench-dsv4-flash-bf16-tree-skew0"
    bench.mkdir()
    rows = [{"tokens": 1, "paths": {"mxmoe": {"us": 40.0}}}, {"tokens": 1024, "paths": {"mxmoe": {"us": 1500.0}}}]
    (bench / "dsv4-flash.json").write_text(json.dumps({"rows": rows}))
    text = ratios.report(str(tmp_path), "tree")
    assert "| 1 | 40.0 | Humming 0.1.19 MoE MXFP4 | 57.6 | 1.44 |" in text, text
    assert "| 1024 | 1500.0 | Humming 0.1.19 MoE MXFP4 | 1573.0 | 1.05 |" in text, text
    assert "no mxmoe bench for side 'snapA'" in ratios.report(str(tmp_path), "snapA")
    assert ratios.main(["peer-ratios", str(tmp_path / "absent")]) == 1
