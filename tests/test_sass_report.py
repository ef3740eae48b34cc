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
