"""scripts/sass-loop: the K loop and its counts from a cuobjdump listing (a hand-written one here, in
cuobjdump's format, so no GPU tools are needed)."""

import pytest
from script_module import load_script


@pytest.fixture(scope="module")
def sass_loop():
    return load_script("sass-loop")


LISTING = """
\tcode for sm_90a
\t\tFunction : _Z6decodev
\t.headerflags\t@"EF_CUDA_SM90"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                 /* 0x00000a00ff017b82 */
                                                                          /* 0x000fe40000000800 */
        /*0010*/                   ISETP.NE.AND P0, PT, R1, RZ, PT ;
        /*0020*/                   LDGSTS.E.BYPASS.128 [R3], desc[UR8][R4.64], !P1 ;
        /*0030*/                   LOP3.LUT R5, R6, 0x81c081c0, RZ, 0xc0, !PT ;
        /*0040*/                   HMUL2.BF16_V2 R7, R5, R8 ;
        /*0050*/                   HMMA.16816.F32.BF16 R20, R24, R12, R20 ;
        /*0060*/              @!P0 BRA 0x20 ;
        /*0070*/                   BRA 0x10 ;
        /*0080*/                   EXIT ;
\t\tFunction : _Z4copyv
        /*0000*/                   LDG.E R2, desc[UR4][R2.64] ;
        /*0010*/              @P0 BRA 0x0 ;
        /*0020*/                   EXIT ;
"""


def test_parses_each_function_and_its_instructions(sass_loop):
    functions = sass_loop.parse_functions(LISTING)
    assert list(functions) == ["_Z6decodev", "_Z4copyv"]
    assert functions["_Z6decodev"][0] == (0, "LDC R1, c[0x0][0x28]")
    assert len(functions["_Z6decodev"]) == 9, "encoding-only lines are not instructions"


def test_opcode_drops_predicate_and_modifiers(sass_loop):
    assert sass_loop.opcode("@!P0 LDGSTS.E.BYPASS.128 [R3], desc[UR8][R4.64]") == "LDGSTS"
    assert sass_loop.opcode("HMUL2.BF16_V2 R7, R5, R8") == "HMUL2"


def test_k_loop_is_the_longest_back_edge_holding_an_mma(sass_loop):
    functions = sass_loop.parse_functions(LISTING)
    assert sass_loop.k_loop(functions["_Z6decodev"]) == (0x10, 0x70), "0x10-0x70 is longer than 0x20-0x60"
    assert sass_loop.k_loop(functions["_Z4copyv"]) is None, "its loop has no MMA"


def test_report_counts_the_loop(sass_loop):
    functions = sass_loop.parse_functions(LISTING)
    text = sass_loop.report("_Z6decodev", functions["_Z6decodev"])
    assert "7 instructions, 1 MMA, 7.0 per MMA" in text, text
    assert "BRA 2" in text and "HMMA 1" in text, text


def test_main_names_a_missing_kernel(sass_loop, tmp_path, capsys):
    listing = tmp_path / "k.sass"
    listing.write_text(LISTING)
    assert sass_loop.main(["sass-loop", str(listing), "Gemm"]) == 1
    assert "no kernel matches 'Gemm' (2 in" in capsys.readouterr().err
    assert sass_loop.main(["sass-loop", str(listing), "decode"]) == 0
    assert "K loop 0x10-0x70" in capsys.readouterr().out


def test_budget_passes_within_tolerance_and_fails_above(sass_loop):
    import io

    functions = sass_loop.parse_functions(LISTING)
    out = io.StringIO()
    assert sass_loop.check_budget({"tolerance": 0.0, "kernels": {"decode": 7}}, functions, out) == 0, out.getvalue()
    assert "ok   decode: 7 instructions in the K loop (1 MMA), budget 7" in out.getvalue()
    out = io.StringIO()
    assert sass_loop.check_budget({"tolerance": 0.2, "kernels": {"decode": 5}}, functions, out) == 1, "7 > 5 x 1.2"
    assert "FAIL decode" in out.getvalue()
    assert sass_loop.check_budget({"tolerance": 0.4, "kernels": {"decode": 5}}, functions, io.StringIO()) == 0, "7 <= 5 x 1.4"


def test_budget_names_exactly_one_kernel_with_a_loop(sass_loop):
    import io

    functions = sass_loop.parse_functions(LISTING)
    out = io.StringIO()
    assert sass_loop.check_budget({"kernels": {"_Z": 100, "absent": 100, "copy": 100}}, functions, out) == 3
    text = out.getvalue()
    assert "FAIL _Z: 2 kernels match" in text and "FAIL absent: 0 kernels match" in text, text
    assert "FAIL copy: no K loop with an MMA" in text, text


def test_budget_mode_reads_a_listing_and_exits_one_when_over(sass_loop, tmp_path, capsys):
    import json

    listing = tmp_path / "instances_mxfp4.cu.txt"
    listing.write_text(LISTING)
    budget = tmp_path / "budget.json"
    budget.write_text(json.dumps({"tolerance": 0.0, "objects": {listing.name: {"decode": 7}}}))
    assert sass_loop.main(["sass-loop", "--budget", str(budget), str(tmp_path)]) == 0
    budget.write_text(json.dumps({"tolerance": 0.0, "objects": {listing.name: {"decode": 6}}}))
    assert sass_loop.main(["sass-loop", "--budget", str(budget), str(tmp_path)]) == 1
    assert "record the new counts" in capsys.readouterr().err
    budget.write_text(json.dumps({"objects": {"absent.o": {"decode": 7}}}))
    assert sass_loop.main(["sass-loop", "--budget", str(budget), str(tmp_path)]) == 1


def test_budget_mode_skips_without_cuobjdump(sass_loop, tmp_path, monkeypatch, capsys):
    import json

    obj = tmp_path / "instances_mxfp4.cu.o"
    obj.write_bytes(b"\x7fELF")

    def missing():
        raise sass_loop.NoCuobjdump("sass-loop: no cuobjdump")

    monkeypatch.setattr(sass_loop, "find_cuobjdump", missing)
    budget = tmp_path / "budget.json"
    budget.write_text(json.dumps({"objects": {obj.name: {"decode": 7}}}))
    assert sass_loop.main(["sass-loop", "--budget", str(budget), str(tmp_path)]) == 77, "ctest's skip code"
    assert "not checked" in capsys.readouterr().err


def test_budget_mode_needs_a_budget_and_a_target(sass_loop, capsys):
    assert sass_loop.main(["sass-loop", "--budget", "budget.json"]) == 2
    assert "usage: sass-loop --budget BUDGET_JSON BUILD_DIR_OR_OBJECT" in capsys.readouterr().err
