"""The tracked cases of scripts/sass_report.py, their rows and regression check against the baseline, and
the instruction-budget model (issue 19, design §7).

ESTIMATE, not a measurement: the fraction of HBM speed a kernel could reach from its SASS instructions per
element (the report's static hot-loop figure) and the bytes it moves per element, on an ideal machine:

    R       = SMs x 4 schedulers x 32 lanes x clock    thread-instructions issued per second (128 lanes per SM
                                                       on sm_80 / sm_89 / sm_90: one warp instruction per
                                                       scheduler per cycle)
    t_issue = I / R      I: SASS instructions per element (longest path through one hot-loop iteration)
    t_mem   = B / BW     B: bytes per element to or from HBM,  BW: nominal HBM bandwidth
    est. fraction of HBM speed = t_mem / max(t_mem, t_issue) = min(1, R * B / (BW * I))

so a kernel runs at the bandwidth limit while I <= I* = R * B / BW and at >= 80 % while I <= 1.25 * I*
(H200: I* = 6.18 * B, 80 % at 7.7 * B: the issue's budgets). Assumptions: perfect issue (no dependency
stalls and no pipe limits: the special-function unit issues 16 lanes per SM per cycle, a quarter of the
rate assumed here), no memory-latency stalls (enough bytes in flight: the report's in-flight column), every
element executes the longest path of the hot loop (an upper bound: unswitched copies and rare branches are
counted as if always taken), HBM at its nominal bandwidth (a device copy reaches about 90 % of it), and the
sm_90 instruction count for every GPU (the sm_80 / sm_89 SASS differs somewhat).

GPUs (SMs, clock, HBM bandwidth):
    H200            132 SMs, 1.755 GHz (the issue's figure; NVIDIA quotes 1.98 GHz boost), 4.8 TB/s
    H100 SXM        132 SMs, 1.98 GHz (max boost), 3.35 TB/s
    A100 SXM 80GB   108 SMs, 1.41 GHz (boost), 2.0 TB/s
    RTX 4090        128 SMs, 2.52 GHz (boost), 1.0 TB/s
"""
import re

# (column name, SMs, clock in Hz, HBM bandwidth in bytes/s)
GPUS = [
    ("H200", 132, 1.755e9, 4.8e12),
    ("H100", 132, 1.98e9, 3.35e12),
    ("A100", 108, 1.41e9, 2.0e12),
    ("4090", 128, 2.52e9, 1.0e12),
]
LANES_PER_SM = 4 * 32

# c++filt prints an enum template argument as "(Type)N": the values of GradOutputLayout::kReduced (a scalar
# grad_output) and ::kSpatial (reduction 'none', grad_output (N, d...) broadcast over C of (N, C, d...)) in
# apply_grad_output_kernel; the reduced case also matches the kernel before the layout parameter existed.
GRAD_OUTPUT_LAYOUT_REDUCED = 0
GRAD_OUTPUT_LAYOUT_SPATIAL = 3  # GradOutputLayout::kSpatialVector
_GRAD_LAYOUT = r"(?:\((?:focal::cuda::)?GradOutputLayout\){}|(?:focal::cuda::)?GradOutputLayout::{})[,>]"

_ELEMENTWISE = r"elementwise_forward_kernel<{}, {}, \(focal::cuda::Layout\){}>"

# Tracked cases: name (the baseline's key), regex over the demangled kernel name, elements one thread handles
# per hot-loop iteration (fixed by the kernel's constants), which loop ("innermost", or "outermost": a
# grid-stride loop holding per-row inner loops), bytes per element to / from HBM (None: the hot loop is not
# the whole kernel's work), the issue's budget of SASS instructions per element (None: not budgeted).
CASES = [
    ("sigmoid dense bf16 g2", _ELEMENTWISE.format("c10::BFloat16", r"SigmoidPoint<2, false, float>", 0),
     16, "innermost", 6, 46),
    # C = 80: rows of whole pairs of vectors (Layout::kIndexGrouped, two adjacent vectors per access)
    ("sigmoid index bf16 g2", _ELEMENTWISE.format("c10::BFloat16", r"SigmoidPoint<2, false, float>", 4),
     16, "innermost", 4, 30),
    # C % 16 == 8: rows of whole vectors (Layout::kIndexAligned, one vector per access); not in the issue's table
    ("sigmoid index bf16 g2, C % 16 == 8", _ELEMENTWISE.format("c10::BFloat16", r"SigmoidPoint<2, false, float>", 3),
     16, "innermost", 4, None),
    ("sigmoid index bf16 g2, C % 8 != 0", _ELEMENTWISE.format("c10::BFloat16", r"SigmoidPoint<2, false, float>", 2),
     16, "innermost", 4, 36),
    ("sigmoid dense fp32 g2", _ELEMENTWISE.format("float", r"SigmoidPoint<2, false, float>", 0),
     8, "innermost", 12, None),
    ("sigmoid dense bf16 g=any", _ELEMENTWISE.format("c10::BFloat16", r"SigmoidPoint<-1, false, float>", 0),
     16, "innermost", 6, None),
    ("binary dense bf16 g2", _ELEMENTWISE.format("c10::BFloat16", r"BinaryPoint<2, float>", 0),
     16, "innermost", 6, 46),
    ("varifocal index bf16 g2", _ELEMENTWISE.format("c10::BFloat16", r"VarifocalPoint<2, float>", 4),
     16, "innermost", 4, 30),
    ("quality focal dense bf16 b2", _ELEMENTWISE.format("c10::BFloat16", r"QualityFocalPoint<2, float>", 0),
     16, "innermost", 6, 46),
    ("asymmetric dense bf16", _ELEMENTWISE.format("c10::BFloat16", r"AsymmetricPoint<true, true, float>", 0),
     16, "innermost", 6, 46),
    ("softmax rows C=80 bf16 g2", r"softmax_rows_warp_kernel<2, false, 5, c10::BFloat16>", 40, "outermost", 4, 30),
    ("softmax rows C=80 fp32 g2", r"softmax_rows_warp_kernel<2, false, 5, float>", 20, "outermost", 8, None),
    ("softmax block bf16 g2", r"softmax_rows_block_kernel<2, false, c10::BFloat16>", 64, "innermost", None, None),
    ("backward bf16", r"apply_grad_output_kernel<c10::BFloat16(?:>|, "
     + _GRAD_LAYOUT.format(GRAD_OUTPUT_LAYOUT_REDUCED, "kScalar") + ")", 8, "innermost", 4, None),
    # New in issue 19 (the vectorised 'none' backward): one 16-byte bf16 vector of the gradient per iteration.
    ("backward none spatial bf16",
     r"apply_grad_output_kernel<c10::BFloat16, " + _GRAD_LAYOUT.format(GRAD_OUTPUT_LAYOUT_SPATIAL, "kSpatialVector"),
     8, "innermost", 6, 8),
]


def short(name, width=110):
    name = re.sub(r"\(([^()]|\([^()]*\))*\)$", "", name).replace("void ", "")
    return name if len(name) <= width else name[:width - 3] + "..."


def case_rows(kernels, has_hot_loops=True):
    """One row per tracked case with the budget model's figures, from kernels (demangled name -> figures,
    "hot_loops" as sass_report.hot_loop_figures gives them); has_hot_loops False: a JSON without them."""
    rows = []
    for case, pattern, elements, which, bytes_per_element, budget in CASES:
        matches = [k for k in kernels if re.search(pattern, k)]
        if not matches:
            rows.append(add_budget({"case": case, "missing": True}, bytes_per_element, budget))
            continue
        k = kernels[matches[0]]
        figures = k.get("hot_loops") if has_hot_loops else None
        hot_loop = None if figures is None else figures[which]["size"]
        per_element = None if hot_loop is None else hot_loop / elements
        wide_loads = 0 if figures is None else figures[which]["wide_loads"]
        in_flight_kb = wide_loads * 16 * k["threads"] * k["blocks_per_sm"] / 1024 if has_hot_loops else None
        rows.append(add_budget(
            {"case": case, "kernel": short(matches[0], 90), "registers": k["registers"], "stack": k["stack"],
             "in_flight_kb": in_flight_kb, "threads": k["threads"], "blocks_per_sm": k["blocks_per_sm"],
             "hot_loop": hot_loop, "elements": elements, "per_element": per_element}, bytes_per_element, budget))
    return rows


def fmt(v, spec="{}"):
    return "—" if v is None else spec.format(v)


def print_cases(rows):
    print("| case | regs | stack | threads | blocks/SM | KB in flight/SM | hot loop | elements | SASS / element |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r.get("missing"):
            print(f"| {r['case']} | kernel not found | | | | | | | |")
            continue
        print(f"| {r['case']} | {r['registers']} | {r['stack']} | {r['threads']} | {r['blocks_per_sm']} | "
              f"{fmt(r['in_flight_kb'], '{:.0f}')} | "
              f"{fmt(r['hot_loop'])} | {r['elements']} | {fmt(r['per_element'], '{:.1f}')} |")


def check(kernels, rows, baseline, warnings=None):
    """Regressions against the baseline: a tracked case that vanished or lost its hot loop, more SASS / element
    than its baseline (by > 3 %), fewer blocks per SM; a stack frame or local memory in any kernel, except the
    baseline's listed ones (which may not grow). A case the baseline does not have yet (a new case) that is
    not found or has no hot loop goes to `warnings` instead. The issue's budgets are reported, not enforced."""
    problems = []
    for r in rows:
        base = baseline.get("cases", {}).get(r["case"])
        lost = ("kernel not found" if r.get("missing") else
                "no hot loop with a 128-bit load found" if r["per_element"] is None else None)
        if lost:
            (problems if base is not None or warnings is None else warnings).append(f"{r['case']}: {lost}")
            continue
        if base is None:
            continue
        if r["per_element"] > base["per_element"] * 1.03:
            problems.append(f"{r['case']}: {r['per_element']:.1f} SASS / element, baseline {base['per_element']:.1f}")
        if r["blocks_per_sm"] < base["blocks_per_sm"]:
            problems.append(f"{r['case']}: {r['blocks_per_sm']} blocks / SM, baseline {base['blocks_per_sm']}")
    allowed = baseline.get("stack_allowed", {})
    for name, k in kernels.items():
        frame = k["stack"] + k["local"]
        if frame > allowed.get(short(name, 10**6), 0):
            problems.append(f"{short(name)}: stack frame {k['stack']} B, local {k['local']} B")
    return problems


def issue_rate(sms, clock):
    """Thread-instructions per second with every scheduler issuing every cycle."""
    return sms * LANES_PER_SM * clock


def hbm_fraction(per_element, bytes_per_element, sms, clock, bandwidth):
    """Estimated fraction of HBM speed: t_mem / max(t_mem, t_issue) (see the module docstring)."""
    if per_element is None or bytes_per_element is None:
        return None
    t_mem = bytes_per_element / bandwidth
    t_issue = per_element / issue_rate(sms, clock)
    return t_mem / max(t_mem, t_issue)


def add_budget(row, bytes_per_element, budget):
    """The budget model's figures on one report row (a dict with per_element, None when not found)."""
    per_element = row.get("per_element")
    row["bytes"] = bytes_per_element
    row["budget"] = budget
    row["within_budget"] = None if budget is None or per_element is None else per_element <= budget
    row["hbm"] = {name: hbm_fraction(per_element, bytes_per_element, sms, clock, bw)
                  for name, sms, clock, bw in GPUS}
    return row


def print_budget(rows):
    print("Budget model, an ESTIMATE from the SASS count (issue rate vs HBM bandwidth, perfect issue, no latency "
          "stalls; formula in scripts/sass_budget.py):")
    print("| case | bytes / element | SASS / element | budget | within budget | "
          + " | ".join(f"est. % HBM {name}" for name, *_ in GPUS) + " |")
    print("|---|---|---|---|---|" + "---|" * len(GPUS))
    for r in rows:
        within = {None: "—", True: "yes", False: "no"}[r["within_budget"]]
        if r.get("missing"):
            within = "kernel not found"
        percents = " | ".join(fmt(r["hbm"][name], "{:.0%}") for name, *_ in GPUS)
        print(f"| {r['case']} | {fmt(r['bytes'])} | {fmt(r.get('per_element'), '{:.1f}')} | "
              f"{fmt(r['budget'], '≤ {}')} | {within} | {percents} |")


def over_budget(rows):
    """One line per case over its budget (reported, not enforced: --check does not fail on these)."""
    first = GPUS[0][0]
    return [f"{r['case']}: {r['per_element']:.1f} SASS / element, budget ≤ {r['budget']} "
            f"(est. {r['hbm'][first]:.0%} of HBM speed on {first})"
            for r in rows if r["within_budget"] is False]
