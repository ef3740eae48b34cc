"""scripts/sass_report.py's static analysis on hand-written SASS: loops, the longest path through a hot loop,
occupancy arithmetic, and the regression check. (CI runs the report itself on the built extension.)"""
import importlib.util
import os

import pytest

_PATH = os.path.join(os.path.dirname(__file__), "..", "scripts", "sass_report.py")
_spec = importlib.util.spec_from_file_location("sass_report", _PATH)
sass_report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sass_report)


def sass(lines):
    """cuobjdump -sass text of one kernel from (address, instruction) pairs."""
    body = "\n".join(f"        /*{addr:04x}*/   {text} ;   /* 0x0 */" for addr, text in lines)
    return f"\t\tFunction : _Z6kernelv\n{body}\n"


# A grid-stride loop at 0x10..0x90 whose body was unswitched into two copies (0x30-0x50 and 0x60-0x70) on a
# uniform flag, plus a device-assert call that leaves the loop.
UNSWITCHED = [
    (0x00, "MOV R1, c[0x0][0x28]"),
    (0x10, "LDG.E.128 R4, desc[UR4][R2.64]"),
    (0x20, "@P0 BRA 0x60"),
    (0x30, "FADD R4, R4, R5"),
    (0x40, "FMUL R4, R4, R6"),
    (0x50, "BRA 0x80"),
    (0x60, "FADD R4, R4, R5"),
    (0x70, "NOP"),
    (0x80, "@P1 CALL.ABS.NOINC R14"),
    (0x90, "@P2 BRA 0x10"),
    (0xa0, "EXIT"),
]


def parsed(lines):
    return sass_report.parse_sass(sass(lines))["_Z6kernelv"]


def test_finds_the_loop_of_a_backward_branch():
    instructions = parsed(UNSWITCHED)
    assert sass_report.loops(instructions) == [(1, 9)]


def test_longest_path_counts_one_copy_of_an_unswitched_body_and_no_nops():
    instructions = parsed(UNSWITCHED)
    # LDG, BRA, FADD, FMUL, BRA, CALL (conditional: falls through), BRA = 7; the other copy has 1 + NOP.
    assert sass_report.longest_path(instructions, 1, 9) == 7
    assert sass_report.hot_loop_size(instructions) == 7


def test_unconditional_assert_call_ends_a_path():
    lines = [(0x00, "LDG.E.128 R4, desc[UR4][R2.64]"), (0x10, "@P0 BRA 0x40"),
             (0x20, "FADD R1, R1, R1"), (0x30, "CALL.ABS.NOINC R14"),
             (0x40, "FMUL R1, R1, R1"), (0x50, "@P1 BRA 0x0")]
    instructions = parsed(lines)
    # The FADD + CALL side never reaches the backward branch: the path goes LDG, BRA, FMUL, BRA.
    assert sass_report.longest_path(instructions, 0, 5) == 4


def test_loop_without_a_wide_load_is_not_hot():
    lines = [(0x00, "LDG.E R4, desc[UR4][R2.64]"), (0x10, "FADD R1, R1, R1"), (0x20, "@P1 BRA 0x0")]
    assert sass_report.hot_loop_size(parsed(lines)) is None


@pytest.mark.parametrize("registers, threads, shared, blocks", [
    (32, 256, 0, 8),     # thread limit: 2048 / 256
    (64, 256, 0, 4),     # 64 regs * 256 threads = 16384 per block: 4 in 65536
    (72, 256, 0, 3),     # rounded up to 80 per thread (allocation unit 256 per warp)
    (128, 512, 0, 1),
    (32, 256, 60 * 1024, 3),  # shared memory: 228 KiB / (60 KiB + 1 KiB reserved)
])
def test_blocks_per_sm(registers, threads, shared, blocks):
    assert sass_report.blocks_per_sm(registers, threads, shared) == blocks


def kernel(stack=0, registers=64, blocks=4):
    return {"registers": registers, "stack": stack, "local": 0, "threads": 256, "blocks_per_sm": blocks}


def row(per_element, blocks=4):
    return {"case": "c", "per_element": per_element, "blocks_per_sm": blocks, "target": 30}


def test_check_passes_at_the_baseline_and_flags_more_instructions_or_fewer_blocks():
    baseline = {"cases": {"c": {"per_element": 40.0, "blocks_per_sm": 4}}}
    kernels = {"void k<float>()": kernel()}
    assert sass_report.check(kernels, [row(40.0)], baseline) == []
    assert sass_report.check(kernels, [row(41.0)], baseline) == []  # within 3 %
    assert len(sass_report.check(kernels, [row(42.0)], baseline)) == 1
    assert len(sass_report.check(kernels, [row(40.0, blocks=3)], baseline)) == 1


def test_check_flags_a_new_or_grown_stack_frame_only():
    kernels = {"void k<double>()": kernel(stack=16), "void k<float>()": kernel(stack=8)}
    baseline = {"cases": {}, "stack_allowed": {"k<double>": 16}}
    problems = sass_report.check(kernels, [], baseline)
    assert len(problems) == 1 and "k<float>" in problems[0]


def test_hot_loop_figures_give_the_hot_loop_and_its_wide_loads():
    figures = sass_report.hot_loop_figures(parsed(UNSWITCHED))
    assert figures["innermost"] == figures["outermost"] == {"size": 7, "wide_loads": 1}


# ---- the budget model (scripts/sass_budget.py) -------------------------------------------------------------

budget = sass_report.sass_budget
H200, H100, A100, RTX4090 = budget.GPUS


def fraction(per_element, bytes_per_element, gpu):
    return budget.hbm_fraction(per_element, bytes_per_element, *gpu[1:])


@pytest.mark.parametrize("bytes_per_element", [4, 6])
def test_h200_is_at_bandwidth_at_6_2_instructions_per_byte_and_at_80_percent_at_7_7(bytes_per_element):
    # 132 SMs x 128 lanes x 1.755 GHz = 29.65 T instructions/s against 4.8 TB/s: 6.18 instructions per byte.
    assert fraction(6.0 * bytes_per_element, bytes_per_element, H200) == 1.0
    assert fraction(6.2 * bytes_per_element, bytes_per_element, H200) == pytest.approx(0.996, abs=0.002)
    assert fraction(7.7 * bytes_per_element, bytes_per_element, H200) == pytest.approx(0.802, abs=0.002)
    assert fraction(12.36 * bytes_per_element, bytes_per_element, H200) == pytest.approx(0.5, abs=0.002)


@pytest.mark.parametrize("gpu, per_byte", [(H100, 9.99), (A100, 9.75), (RTX4090, 41.3)])
def test_break_even_instructions_per_byte_of_the_other_gpus(gpu, per_byte):
    assert fraction(per_byte * 1.01 * 4, 4, gpu) == pytest.approx(1 / 1.01, abs=0.002)
    assert fraction(per_byte * 2 * 4, 4, gpu) == pytest.approx(0.5, abs=0.002)


def test_budget_row_within_and_over():
    within = budget.add_budget({"case": "a", "per_element": 44.4}, 6, 46)
    over = budget.add_budget({"case": "b", "per_element": 56.8}, 4, 30)
    assert within["within_budget"] is True and over["within_budget"] is False
    assert over["hbm"]["H200"] == pytest.approx(0.435, abs=0.002)
    assert [line.split(":")[0] for line in budget.over_budget([within, over])] == ["b"]
    unbudgeted = budget.add_budget({"case": "c", "missing": True}, 6, None)
    assert unbudgeted["within_budget"] is None and unbudgeted["hbm"]["H200"] is None


@pytest.mark.parametrize("name, case", [
    ("void apply_grad_output_kernel<c10::BFloat16>(c10::BFloat16 const*, long)", "backward bf16"),
    ("void apply_grad_output_kernel<c10::BFloat16, (focal::cuda::GradOutputLayout)0>(long)", "backward bf16"),
    ("void apply_grad_output_kernel<c10::BFloat16, (focal::cuda::GradOutputLayout)3>(long)",
     "backward none spatial bf16"),
    ("void apply_grad_output_kernel<c10::BFloat16, (GradOutputLayout)3>(long)", "backward none spatial bf16"),
    ("void apply_grad_output_kernel<c10::BFloat16, focal::cuda::GradOutputLayout::kSpatialVector>(long)",
     "backward none spatial bf16"),
    ("void apply_grad_output_kernel<float, (focal::cuda::GradOutputLayout)3>(long)", None),
])
def test_backward_cases_match_the_kernel_before_and_after_the_layout_parameter(name, case):
    import re
    assert [c[0] for c in budget.CASES if re.search(c[1], name)] == ([case] if case else [])


@pytest.mark.parametrize("layout, case", [
    (4, "sigmoid index bf16 g2"),  # Layout::kIndexGrouped: C = 80, two adjacent vectors per access
    (3, "sigmoid index bf16 g2, C % 16 == 8"),  # Layout::kIndexAligned
    (2, "sigmoid index bf16 g2, C % 8 != 0"),  # Layout::kIndex
])
def test_class_index_cases_match_their_layout(layout, case):
    import re
    name = ("void elementwise_forward_kernel<c10::BFloat16, SigmoidPoint<2, false, float>, "
            f"(focal::cuda::Layout){layout}>(long)")
    assert [c[0] for c in budget.CASES if re.search(c[1], name)] == [case]


def test_check_warns_on_a_missing_new_case_and_fails_on_a_missing_baseline_case():
    rows = [{"case": "old", "missing": True}, {"case": "new", "missing": True}]
    warnings = []
    problems = sass_report.check({}, rows, {"cases": {"old": {"per_element": 4.5, "blocks_per_sm": 8}}}, warnings)
    assert problems == ["old: kernel not found"] and warnings == ["new: kernel not found"]


# ---- the command line on a saved JSON ----------------------------------------------------------------------

INDEX = "void elementwise_forward_kernel<c10::BFloat16, SigmoidPoint<2, false, float>, (focal::cuda::Layout)4>(long)"


def run_report(tmp_path, kernels, *args, baseline=None):
    import json
    import subprocess
    import sys
    path = tmp_path / "sass.json"
    path.write_text(json.dumps(kernels))
    base = tmp_path / "baseline.json"
    base.write_text(json.dumps(baseline or {"cases": {}}))
    return subprocess.run([sys.executable, _PATH, "--from-json", str(path), "--baseline", str(base), *args],
                          capture_output=True, text=True)


def saved_kernel(hot_loop=None):
    k = dict(kernel(), shared=0, sass_lines=100)
    if hot_loop is not None:
        k["hot_loops"] = {w: {"size": hot_loop, "wide_loads": 2} for w in ("innermost", "outermost")}
    return k


def test_from_json_reports_the_budget_and_checks_without_failing_on_budgets(tmp_path):
    # 912 / 16 = 57 SASS / element over the 4-byte index case's budget of 30: est. 43 % of HBM on an H200.
    baseline = {"cases": {"sigmoid index bf16 g2": {"per_element": 57.0, "blocks_per_sm": 4}}}
    done = run_report(tmp_path, {INDEX: saved_kernel(912)}, "--check", baseline=baseline)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| sigmoid index bf16 g2 | 4 | 57.0 | ≤ 30 | no | 43% | 70% | 68% | 100% |" in done.stdout
    assert "OVER BUDGET (reported, not a failure): sigmoid index bf16 g2" in done.stdout
    assert "WARNING (new case, not in the baseline): backward none spatial bf16: kernel not found" in done.stdout
    assert "REGRESSION" not in done.stdout
    # More instructions than the baseline is still a regression.
    baseline["cases"]["sigmoid index bf16 g2"]["per_element"] = 50.0
    assert run_report(tmp_path, {INDEX: saved_kernel(912)}, "--check", baseline=baseline).returncode == 1


def test_from_json_without_hot_loop_figures_reports_but_refuses_check(tmp_path):
    done = run_report(tmp_path, {INDEX: saved_kernel()})
    assert done.returncode == 0 and "| sigmoid index bf16 g2 | 4 | — | ≤ 30 | — |" in done.stdout
    assert run_report(tmp_path, {INDEX: saved_kernel()}, "--check").returncode != 0
