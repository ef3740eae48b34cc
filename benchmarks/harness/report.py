"""What a run shows and keeps: the table printed per mode, the headline lines, the CSV and the bar plot."""
import csv
import os
import platform

import torch

from .providers import BASELINES, PROVIDERS

COLUMNS = [("preset", "preset", "{}"), ("shape", "shape", "{}"), ("dtype", "dtype", "{}"), ("mode", "mode", "{}"),
           ("provider", "provider", "{}"), ("median_ms", "median ms", "{:.3f}"), ("p20_ms", "p20", "{:.3f}"),
           ("p80_ms", "p80", "{:.3f}"), ("gbps", "GB/s", "{:.1f}"), ("peak_mb", "peak MB", "{:.1f}"),
           ("x_roofline", "x roofline", "{:.2f}"), ("x_cross_entropy", "x CE", "{:.2f}"),
           ("x_compiled", "x compiled", "{:.2f}"), ("x_naive", "x naive", "{:.3f}"), ("check", "check", "{}")]
WIDTHS = [10, 14, 5, 8, 13, 10, 9, 9, 7, 9, 10, 7, 10, 8, 8]
LEFT_ALIGNED = 5  # the first five columns (the case and provider) are left-aligned, numbers right-aligned

CSV_FIELDS = ["device", "device_name", "torch", "threads", "date", "preset", "op", "shape", "elements", "dtype",
              "mode", "reduction", "loss_scale", "provider", "median_ms", "p20_ms", "p80_ms", "reps", "minimal_bytes", "gbps",
              "peak_mb", "x_roofline", "x_cross_entropy", "x_compiled", "x_naive", "check", "note"]
BANDWIDTH_FIELDS = ["traffic_bytes", "pct_hbm", "copy_tb_s"]  # appended when the run measured % HBM


class Table:
    """The printed table; the header once, before the first rows. bandwidth_title: adds the % HBM column."""

    def __init__(self, bandwidth_title=None):
        self.columns, self.widths = list(COLUMNS), list(WIDTHS)
        if bandwidth_title:
            at = [key for key, _, _ in COLUMNS].index("gbps") + 1
            self.columns.insert(at, ("pct_hbm", bandwidth_title, "{:.1f}"))
            self.widths.insert(at, 7)
        self.header_printed = False

    def print_rows(self, rows):
        if not self.header_printed:
            print(" ".join(title.rjust(w) if i >= LEFT_ALIGNED else title.ljust(w)
                           for i, ((_, title, _), w) in enumerate(zip(self.columns, self.widths))))
            self.header_printed = True
        for row in rows:
            cells = []
            for i, ((key, _, fmt), width) in enumerate(zip(self.columns, self.widths)):
                value = row.get(key)
                text = "-" if value is None or value == "" else fmt.format(value)
                cells.append(text.rjust(width) if i >= LEFT_ALIGNED else text.ljust(width))
            line = " ".join(cells)
            if row.get("note"):
                line += "  " + row["note"]
            print(line)
        print()


def summarise_headline(rows):
    """focal_cuda's time against the floor and PyTorch's own loss, per case (full mode)."""
    for row in rows:
        if row["provider"] != "focal_cuda" or row["mode"] != "full" or "median_ms" not in row:
            continue
        ratios = ", ".join(f"{row[f'x_{b}']:.2f}x {b}" for b in BASELINES if f"x_{b}" in row)
        hbm = f", {row['pct_hbm']:.0f}% of the copy bandwidth" if "pct_hbm" in row else ""
        print(f"headline {row['preset']} {row['shape']} {row['dtype']}, {row['threads']} threads: focal_cuda "
              f"{row['median_ms']:.2f} ms = {ratios}{hbm}")


def write_csv(rows, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fields = CSV_FIELDS + [f for f in BANDWIDTH_FIELDS if any(f in row for row in rows)]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    print(f"csv: {path}")


def write_plot(rows, path, device):
    """One group of bars per case (preset, shape, dtype; full mode when measured): median ms per provider."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install matplotlib)")
        return
    timed = [r for r in rows if "median_ms" in r]
    if not timed:
        print("plot skipped: no measurements")
        return
    mode = "full" if any(r["mode"] == "full" for r in timed) else timed[0]["mode"]
    timed = [r for r in timed if r["mode"] == mode]
    cases = list(dict.fromkeys((r["preset"], r["shape"], r["dtype"]) for r in timed))
    providers = [p for p in PROVIDERS if any(r["provider"] == p for r in timed)]
    colours = {"focal_cuda": "tab:blue", "naive": "tab:red", "compiled": "tab:orange", "cross_entropy": "tab:green",
               "roofline": "tab:grey", "reference": "tab:purple"}
    width = 0.8 / len(providers)
    figure, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(cases) + 2), 4.5))
    for index, provider in enumerate(providers):
        for case_index, case in enumerate(cases):
            match = [r for r in timed if (r["preset"], r["shape"], r["dtype"]) == case and r["provider"] == provider]
            if not match:
                continue
            xpos = case_index + (index - (len(providers) - 1) / 2) * width
            ax.bar(xpos, match[0]["median_ms"], width, color=colours.get(provider),
                   label=provider if case_index == 0 or not ax.get_legend_handles_labels()[1].count(provider) else None)
            ax.text(xpos, match[0]["median_ms"], f"{match[0]['median_ms']:.3g}", ha="center", va="bottom",
                    fontsize=6, rotation=90)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([f"{p}\n{s}\n{d}" for p, s, d in cases], fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel(f"median ms ({mode}), log scale; lower is better")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, ncol=len(unique))
    threads = f", {timed[0]['threads']} threads" if device.type == "cpu" else ""
    ax.set_title(f"{device_label(device)}, torch {torch.__version__}{threads}", fontsize=9)
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"plot: {path}")


def device_label(device):
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
