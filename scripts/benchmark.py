"""Speed benchmark: it measures and prints. Every model side by side, the framework against a plain PyTorch loop of
the same model, the default `train.py` job as a process and, given a TensorFlow Python and the tutorial's Keras
script, the tutorial side by side: our `experiment=tutorial` and the tutorial's Keras model on the same data, same
protocol, interleaved seed by seed.

    python scripts/benchmark.py                 # full: every model, default job x 3 seeds (many minutes on 2 cores)
    python scripts/benchmark.py --quick         # fewer epochs, one seed of the default job
    python scripts/benchmark.py --device cuda --precision bf16-mixed   # on a GPU
    python scripts/benchmark.py --keras-python /path/to/tf-venv/bin/python \
        --keras-script /path/to/keras_reference.py --tutorial-csv /path/to/IBM_2006-01-01_to_2018-01-01.csv
    python scripts/benchmark.py --models vanilla stacked peephole --epochs 1 --overhead-rounds 1 --cell-rounds 1 \
        --skip-default-job                      # a smoke test: does it run (its numbers mean nothing)

Ratios are measured where the machine's drift weighs on both sides: the framework against the plain loop epoch by
epoch in one process (ABBA order, `--overhead-rounds`); peephole, GRU, minGRU, minLSTM and sLSTM against stacked in
one process by `scripts/bench_cells.py` (`--cell-rounds`, with a `torch.profiler` summary of each); the tutorial
against Keras seed by seed. On a shared machine compare ratios measured in the same run, not seconds.

Prints Markdown tables and writes JSON (default `outputs/benchmark/<time>.json`). Each model is measured in a
child process of its own, so peak memory is that model's. Nothing here is a pass/fail: timings are never asserted in
tests, and the results with their date and command go to docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PRECISIONS = ("32-true", "bf16-mixed")  # what both the Lightning fit and the plain loop can run alike


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=[*overrides, f"output_dir={tempfile.mkdtemp()}"])


def sync(device: str) -> None:
    """Wait for the GPU's queued kernels: a clock read right after a CUDA call measures only its launch."""
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def autocast(device: str, precision: str):
    """The autocast Lightning's `precision` puts around forward passes (bf16-mixed), for the hand-written loops."""
    import torch

    return torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")


def build(model: str, seed: int = 0):
    """The data module and model exactly as `train.py model=<model>` composes them."""
    import lightning as L
    from hydra.utils import instantiate

    cfg = compose([f"model={model}", f"seed={seed}"])
    L.seed_everything(seed, workers=True)
    dm = instantiate(cfg.data)
    net = instantiate(cfg.model, n_features=dm.n_features, horizon=dm.horizon, window=dm.window, _convert_="all")
    return dm, net


def peak_memory_mb(device: str) -> float:
    """The process's peak: GPU memory allocated by torch on cuda, the maximum resident set size on cpu."""
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def inference_rate(net, x, device: str, precision: str = "32-true", batch: int = 256, repeats: int = 5) -> float:
    """Test windows per second in eval mode, batches of 256, best of `repeats` passes.

    The model and the windows are moved to `device` first: after `trainer.test` Lightning has moved the model back
    to the CPU, while a data module set up under a GPU trainer keeps its windows on the GPU."""
    import torch

    net.to(device).eval()
    x = x.to(device)
    best = float("inf")
    with torch.inference_mode(), autocast(device, precision):
        for _ in range(repeats + 1):  # the first pass is a warm-up
            sync(device)
            start = time.perf_counter()
            for i in range(0, len(x), batch):
                net(x[i : i + batch])
            sync(device)
            best = min(best, time.perf_counter() - start)
    return len(x) / best


def make_trainer(device: str, epochs: int, precision: str, callback):
    """A bare Lightning Trainer on `device` at `precision`: no logger, checkpoints, progress bar or sanity check."""
    import lightning as L

    return L.Trainer(accelerator="gpu" if device == "cuda" else "cpu", devices=1, max_epochs=epochs,
                     precision=precision, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, callbacks=[callback])


def bench_framework(model: str, device: str, epochs: int, precision: str) -> dict:
    """Lightning fit of one model: per-epoch seconds (train + validation), then test RMSE and inference rate."""
    import lightning as L

    from lstm_zoo.evaluation.metrics import score
    from lstm_zoo.evaluation.predictions import predictions_frame

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer, module) -> None:
            sync(device)
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:  # after the epoch's validation
            sync(device)
            self.times.append(time.perf_counter() - self.start)

    dm, net = build(model)
    timer = EpochTimer()
    fit = make_trainer(device, epochs, precision, timer)
    fit.fit(net, datamodule=dm)
    fit.test(net, datamodule=dm, verbose=False)
    test = score(predictions_frame(net.test_forecasts, dm.test_dates, dm.tickers)[0])
    return {"model": model, "params": net.num_parameters, "epoch_s": timer.times,
            "epoch_s_median": statistics.median(timer.times[1:] or timer.times),
            "windows_per_s": inference_rate(net, dm.datasets["test"].x, device, precision),
            "peak_mem_mb": peak_memory_mb(device), "test_rmse": test["rmse"],
            "persistence_rmse": test["persistence_rmse"], "epochs": epochs}


def plain_epoch(net, optimizer, dm, device: str, precision: str) -> float:
    """One epoch of the floor: the same nn.Module, batches and optimizer in a hand-written loop, then validation."""
    import torch

    train, val = dm.datasets["train"], dm.datasets["val"]
    loss_fn = torch.nn.MSELoss()
    sync(device)
    start = time.perf_counter()
    net.train()
    for idx in torch.randperm(len(train)).split(dm.batch_size):
        x, y = train[idx][:2]
        with autocast(device, precision):
            loss = loss_fn(net(x.to(device)), y.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad(), autocast(device, precision):
        for idx in torch.arange(len(val)).split(dm.batch_size):
            x, y = val[idx][:2]
            loss_fn(net(x.to(device)), y.to(device)).item()
    sync(device)
    return time.perf_counter() - start


def bench_overhead(device: str, rounds: int, precision: str) -> dict:
    """Framework against the floor, interleaved epoch by epoch in one process (ABBA), so that the machine's drift
    weighs on both: a Lightning fit of `stacked` whose callback runs one plain-loop epoch of a second, identical
    model before (odd epochs) or after (even epochs) each timed framework epoch. The first pair is a warm-up.
    Both read the windows the trainer set up (on the GPU under `--device cuda`)."""
    import lightning as L

    dm, net = build("stacked")
    _, plain_net = build("stacked")
    plain_net.to(device)
    plain_optimizer = plain_net.configure_optimizers()

    class Interleave(L.Callback):
        def __init__(self) -> None:
            self.framework: list[float] = []
            self.plain: list[float] = []

        def plain_epoch(self) -> None:
            self.plain.append(plain_epoch(plain_net, plain_optimizer, dm, device, precision))

        def on_train_epoch_start(self, trainer, module) -> None:
            if trainer.current_epoch % 2 == 1:
                self.plain_epoch()
            sync(device)
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:  # after the epoch's validation
            sync(device)
            self.framework.append(time.perf_counter() - self.start)
            if trainer.current_epoch % 2 == 0:
                self.plain_epoch()

    timer = Interleave()
    make_trainer(device, rounds + 1, precision, timer).fit(net, datamodule=dm)
    return {"framework_epoch_s": timer.framework, "plain_epoch_s": timer.plain,
            "ratios": [f / p for f, p in zip(timer.framework[1:], timer.plain[1:])]}


def last_line(result: subprocess.CompletedProcess) -> str:
    return result.stderr.strip().splitlines()[-1] if result.stderr.strip() else f"exit status {result.returncode}"


def child(args: list[str]) -> dict:
    """Run one measurement in a fresh Python process and return its JSON result."""
    result = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        return {"error": last_line(result)}
    return json.loads(result.stdout.strip().splitlines()[-1])


# bench_cells.py options interleaved with stacked: (label, conf/model name, whether it is that model's default, i.e.
# what its per-model epochs above measured too)
CELLS = {"fused_torchscript": ("peephole", "peephole", True), "gru_torch": ("gru (torch nn.GRU)", "gru", False),
         "gru_fused": ("gru (FusedGRU)", "gru", True), "min_gru": ("min_gru", "min_gru", True),
         "min_lstm": ("min_lstm", "min_lstm", True), "slstm": ("slstm", "slstm", True)}


def bench_cells(device: str, rounds: int, options: list[str]) -> dict:
    """scripts/bench_cells.py in a child: the cells' epochs interleaved with stacked's in one process, and a
    `torch.profiler` summary of each (per-model child processes run minutes apart on a machine whose speed drifts;
    a ratio taken within one round of one process does not see the drift). bench_cells runs in float32."""
    out = Path(tempfile.mkdtemp()) / "cells.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "bench_cells.py"), "--options", ",".join(options),
           "--repeats", str(rounds), "--device", device, "--profile", "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    if result.returncode != 0 or not out.exists():
        return {"error": last_line(result)}
    return json.loads(out.read_text())


def on_device(device: str, precision: str) -> list[str]:
    """train.py overrides that run a job as the benchmark's children run: on `device`, at `precision`."""
    return [*(["trainer=gpu"] if device == "cuda" else []), f"trainer.precision={precision}"]


def bench_default_job(seed: int, epochs: int | None, device: str, precision: str) -> dict:
    """`python train.py seed=<seed>` as a user runs it (with trainer=gpu on cuda): process wall time and its
    metrics.json."""
    run_dir = Path(tempfile.mkdtemp()) / "run"
    extra = [f"trainer.max_epochs={epochs}"] if epochs else []
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "train.py", f"seed={seed}", f"hydra.run.dir={run_dir}", *extra,
                             *on_device(device, precision), "trainer.enable_progress_bar=false"],
                            capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        return {"seed": seed, "error": (result.stderr or result.stdout).strip()[-500:]}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"seed": seed, "wall_s": wall, "fit_s": metrics["train_seconds"], "test_rmse": metrics["test/rmse"],
            "persistence_rmse": metrics["test/persistence_rmse"], "epochs": metrics["epochs"]}


def tutorial_data(dataset: str, csv: Path | None) -> list[str]:
    """The Keras reference's --dataset as experiment=tutorial's data: the tutorial's CSV, or the embedded IBM file
    with the reference's split."""
    if dataset == "kaggle":
        return [f"data.path={csv}"]
    return ["data.path=null", "data.train_end=2011-12-31", "data.test_start=2012-01-01"]


def bench_tutorial(seed: int, data: list[str], device: str, precision: str) -> dict:
    """`python train.py experiment=tutorial` on the Keras reference's data: the tutorial's protocol exactly."""
    run_dir = Path(tempfile.mkdtemp()) / "run"
    result = subprocess.run([sys.executable, "train.py", "experiment=tutorial", *data, f"seed={seed}",
                             f"hydra.run.dir={run_dir}", *on_device(device, precision),
                             "trainer.enable_progress_bar=false"], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        return {"seed": seed, "error": (result.stderr or result.stdout).strip()[-500:]}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {"seed": seed, "fit_s": metrics["train_seconds"], "test_rmse": metrics["test/rmse"],
            "persistence_rmse": metrics["test/persistence_rmse"], "epochs": metrics["epochs"],
            "steps": metrics["optimizer_steps"], "train_windows": metrics["windows"]["train"],
            "params": metrics["num_parameters"]}


def bench_keras(python: str, script: Path, seeds: list[int], epochs: int, dataset: str,
                csv: Path | None) -> list[dict]:
    """The tutorial's Keras model (`script`, which prints one JSON line per seed) on `dataset`; the kaggle CSV is
    handed to it in KAGGLE_IBM_CSV, so both sides read the same file."""
    cmd = [python, str(script), "--dataset", dataset, "--epochs", str(epochs), "--seeds", *map(str, seeds)]
    env = {**os.environ, **({"KAGGLE_IBM_CSV": str(csv)} if csv is not None else {})}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    for row in rows:  # Keras' fit: ceil(windows / batch) steps per epoch
        row["steps"] = row["epochs"] * -(-row["n_train_windows"] // row["batch_size"])
    return rows or [{"error": last_line(result)}]


def table(rows: list[list], header: list[str]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(map(str, r)) + " |" for r in rows)])


def spread(values: list[float]) -> str:
    """'mean ± std (each value)'."""
    std = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.mean(values):.2f}{std} ({', '.join(f'{v:.2f}' for v in values)})"


def side_by_side(ours: list[dict], keras: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The tutorial against Keras, seed by seed: the report's lines and its ratio row (Keras' fit over ours)."""
    ours, keras = [r for r in ours if "error" not in r], [k for k in keras if "error" not in k]
    if not ours or not keras:
        return [], []
    rmse, k_rmse = [r["test_rmse"] for r in ours], [k["test_rmse"] for k in keras]
    fit, k_fit = statistics.mean(r["fit_s"] for r in ours), statistics.mean(k["fit_s"] for k in keras)
    steps, k_steps = sorted({r["steps"] for r in ours}), sorted({k["steps"] for k in keras})
    lines = [f"\nTutorial side by side ({keras[0]['dataset']} data; `train.py experiment=tutorial` against the Keras "
             f"reference, {keras[0]['versions']['backend']} {keras[0]['versions']['backend_version']}, "
             f"{len(ours)} / {len(keras)} seeds, interleaved):",
             table([["lstm_zoo", f"{ours[0]['params']:,}", f"{ours[0]['train_windows']:,}", ", ".join(map(str, steps)),
                     f"{fit:.1f}", spread(rmse)],
                    ["Keras", f"{keras[0]['trainable_params']:,}", f"{keras[0]['n_train_windows']:,}",
                     ", ".join(map(str, k_steps)), f"{k_fit:.1f}", spread(k_rmse)]],
                   ["", "params", "training windows", "optimizer steps", "fit s (mean)",
                    "test RMSE: mean ± std (seeds)"])]
    same = "same optimizer steps" if steps == k_steps else f"optimizer steps {steps} against Keras' {k_steps}"
    return lines, [[f"Keras tutorial fit / lstm_zoo tutorial fit (same data, {same})", f"{k_fit / fit:.2f}x"]]


def machine(device: str, precision: str) -> str:
    import torch

    name = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or platform.machine()} CPU"
    return (f"{name}, {os.cpu_count()} cores visible, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, precision {precision}")


def rounds_note(values: list[float], what: str) -> str:
    return f" (median of {len(values)} {what}: {', '.join(f'{r:.2f}' for r in values)})" if len(values) > 1 else ""


def ratio_rows(results: dict, by_name: dict[str, dict]) -> list[list[str]]:
    """Every ratio the run measured, each from the most robust measurement it has: interleaved in one process when
    there is one, else from the per-model child processes."""
    rows = []
    ratios = results.get("overhead_ratios") or []
    if ratios:
        rows.append(["framework epoch / plain PyTorch epoch (stacked)",
                     f"{statistics.median(ratios):.2f}x{rounds_note(ratios, 'interleaved epochs')}"])
    interleaved = {o: r for o, r in results.get("cells", {}).get("ratios", {}).items() if r}
    stacked = by_name.get("stacked")
    for option, (label, model, default) in CELLS.items():
        separate = (f"{by_name[model]['epoch_s_median'] / stacked['epoch_s_median']:.2f}x from the per-model epochs "
                    "above" if default and stacked and model in by_name and model != "stacked" else None)
        values = interleaved.get(option)
        measured = [f"{statistics.median(values):.2f}x{rounds_note(values, 'interleaved rounds')}"] if values else []
        if measured or separate:
            rows.append([f"{label} epoch / stacked epoch", "; ".join(measured + ([separate] if separate else []))])
    if len(by_name) > 1:
        zoo = sum(20 * m["epoch_s_median"] for m in by_name.values())
        rows.append([f"{len(by_name)} models x 20 epochs (sum of epoch medians x 20)", f"{zoo / 60:.1f} min"])
    return rows


def profile_lines(profiles: dict) -> list[str]:
    """`bench_cells.py --profile`'s summary: aten calls per batch and the largest self-CPU shares, beside stacked's."""
    if "stacked" not in profiles:
        return []
    base = profiles["stacked"]["calls_per_batch"]

    def shares(found: dict) -> str:
        return ", ".join(f"{name.removeprefix('aten::')} {share:.0%}" for name, share in found["top"])

    rows = [[CELLS[name][0] if name in CELLS else "stacked (nn.LSTM)" if name == "stacked" else name,
             f"{found['calls_per_batch']:,.0f}", f"{found['calls_per_batch'] / base:.1f}x", shares(found)]
            for name, found in profiles.items()]
    return ["\nProfiles (`bench_cells.py --profile`: torch.profiler over 10 training batches; explains the ratios, "
            "its own cost per call inflates small operators):",
            table(rows, ["", "aten calls per batch", "x stacked's calls", "largest shares of self CPU time"])]


def report(results: dict) -> str:
    memory = "peak GPU MB" if results.get("device") == "cuda" else "peak RSS MB"
    out = [f"Machine: {results['machine']}; {results['epochs']} epochs per model (median epoch after the first)."]
    models = results["models"]
    rows = [[m["model"], f"{m['params']:,}", f"{m['epoch_s_median']:.2f}", f"{m['windows_per_s']:,.0f}",
             f"{m['peak_mem_mb']:.0f}", f"{m['test_rmse']:.2f}", f"{m['persistence_rmse']:.2f}"]
            for m in models if "error" not in m]
    rows += [[m["model"], "error: " + m["error"], "", "", "", "", ""] for m in models if "error" in m]
    out.append(table(rows, ["model", "params", "s/epoch", "inference windows/s", memory,
                            f"test RMSE ({results['epochs']} ep.)", "persistence RMSE"]))
    by_name = {m["model"]: m for m in models if "error" not in m}
    ratios = ratio_rows(results, by_name)
    jobs = [j for j in results.get("default_job", []) if "error" not in j]
    if jobs:
        wall = statistics.mean(j["wall_s"] for j in jobs)
        fit = statistics.mean(j["fit_s"] for j in jobs)
        out.append(f"\nDefault job (`python train.py`, {jobs[0]['epochs']} epochs), {len(jobs)} seed(s): process "
                   f"{wall:.1f} s, fit {fit:.1f} s, test RMSE {spread([j['test_rmse'] for j in jobs])} "
                   f"(persistence {jobs[0]['persistence_rmse']:.2f})")
    lines, rows = side_by_side(results.get("tutorial", []), results.get("keras", []))
    out += lines
    ratios += rows
    cells = results.get("cells", {})
    failures = [("framework / plain loop", results.get("overhead_error")), ("bench_cells", cells.get("error"))]
    failures += [(f"default job, seed {j['seed']}", j["error"]) for j in results.get("default_job", []) if "error" in j]
    failures += [(f"tutorial, seed {r.get('seed')}", r["error"]) for r in results.get("tutorial", []) if "error" in r]
    failures += [("Keras reference", k["error"]) for k in results.get("keras", []) if "error" in k]
    out += [f"\n{name} failed: {error}" for name, error in failures if error]
    plain = results.get("plain_loop", {})
    if plain:
        out.append(f"\nPlain PyTorch loop (stacked, same batches, train + validation): "
                   f"{plain['epoch_s_median']:.2f} s/epoch")
    if ratios:
        out.append("\n" + table(ratios, ["ratio", "measured"]))
    out += profile_lines(cells.get("profiles", {}))
    return "\n".join(out)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 epochs per model, 1 seed of the default job")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="32-true",
                        help="Lightning precision of every fit, and autocast in the plain loop and inference")
    parser.add_argument("--models", nargs="*", help="conf/model names (default: every one but the alias lstm)")
    parser.add_argument("--epochs", type=int, help="epochs per model (default 5, --quick 3)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the default job (--quick: 1)")
    parser.add_argument("--job-epochs", type=int, help="epochs of the default job (default: its config's, 20)")
    parser.add_argument("--skip-default-job", action="store_true")
    parser.add_argument("--keras-python", help="a Python with tensorflow-cpu: adds the tutorial side by side")
    parser.add_argument("--keras-script", type=Path,
                        help="the tutorial's Keras model as a script (--dataset, --epochs, --seeds; one JSON line "
                             "per seed), e.g. keras_reference.py")
    parser.add_argument("--keras-dataset", choices=["kaggle", "bokeh"], default="kaggle",
                        help="data of the side by side: kaggle = the tutorial's CSV (--tutorial-csv), bokeh = the "
                             "embedded IBM file")
    parser.add_argument("--tutorial-csv", type=Path,
                        help="the tutorial's IBM CSV (IBM_2006-01-01_to_2018-01-01.csv), read by both sides with "
                             "--keras-dataset kaggle")
    parser.add_argument("--keras-seeds", type=int, default=3, help="seeds of the tutorial side by side (default 3)")
    parser.add_argument("--overhead-rounds", type=int, default=5,
                        help="epochs of the framework (stacked) and the plain loop interleaved in one process, after "
                             "a warm-up pair; the median ratio is reported")
    parser.add_argument("--cell-rounds", type=int,
                        help="rounds of the cells (peephole, GRU, minGRU, minLSTM, sLSTM) and stacked interleaved in "
                             "one process (default 5, --quick 2)")
    parser.add_argument("--out", type=Path, help="JSON output (default outputs/benchmark/<time>.json)")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model in this process
    args = parser.parse_args(argv)
    if args.one:
        return args
    if args.keras_python:
        if not Path(args.keras_python).is_file():
            parser.error(f"--keras-python {args.keras_python}: no such file. Fix: the python of an environment with "
                         "tensorflow-cpu, e.g. /path/to/tf-venv/bin/python.")
        if args.keras_script is None or not args.keras_script.is_file():
            parser.error(f"--keras-script {args.keras_script or '(not given)'}: the tutorial's Keras script is needed "
                         "with --keras-python. Fix: --keras-script /path/to/keras_reference.py.")
        if args.keras_dataset == "kaggle" and (args.tutorial_csv is None or not args.tutorial_csv.is_file()):
            parser.error(f"--tutorial-csv {args.tutorial_csv or '(not given)'}: --keras-dataset kaggle needs the "
                         "tutorial's CSV. Fix: --tutorial-csv /path/to/IBM_2006-01-01_to_2018-01-01.csv, or "
                         "--keras-dataset bokeh (the embedded IBM file).")
    if args.models:
        known = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
        unknown = [m for m in args.models if m not in known]
        if unknown:
            parser.error(f"--models: unknown {', '.join(unknown)}; conf/model has {', '.join(known)}.")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error(f"--device cuda: no CUDA GPU is usable here (torch {torch.__version__}). Fix: --device cpu.")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    epochs = args.epochs or (3 if args.quick else 5)
    if args.one:
        result = bench_overhead(args.device, args.overhead_rounds, args.precision) if args.one == "overhead" \
            else bench_framework(args.one, args.device, epochs, args.precision)
        print(json.dumps(result))
        return

    models = args.models or sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")
                                   if "_target_" in p.read_text())  # not model=lstm, an alias of stacked
    common = ["--device", args.device, "--epochs", str(epochs), "--precision", args.precision]
    results: dict = {"machine": machine(args.device, args.precision), "device": args.device,
                     "precision": args.precision, "epochs": epochs, "models": []}
    out = args.out or ROOT / "outputs" / "benchmark" / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def save_partial() -> None:  # a run stopped by a time limit still leaves what it measured
        out.write_text(json.dumps({**results, "partial": True}, indent=2))

    for model in models:
        print(f"measuring {model} ...", file=sys.stderr, flush=True)
        results["models"].append({"model": model, **child(["--one", model, *common])})
        row = results["models"][-1]
        if "epoch_s_median" in row:
            print(f"  {model}: {row['epoch_s_median']:.3f} s/epoch, {row['windows_per_s']:,.0f} windows/s",
                  file=sys.stderr, flush=True)
        save_partial()
    if args.overhead_rounds > 0 and "stacked" in models:
        print(f"measuring the plain PyTorch loop and stacked ({args.overhead_rounds} interleaved epochs) ...",
              file=sys.stderr, flush=True)
        overhead = child(["--one", "overhead", "--overhead-rounds", str(args.overhead_rounds), *common])
        results["overhead_error"] = overhead.get("error")
        if "error" not in overhead:
            results["overhead_ratios"] = overhead["ratios"]
            plain = overhead["plain_epoch_s"]
            results["plain_loop"] = {"epoch_s": plain, "epoch_s_median": statistics.median(plain[1:] or plain)}
        save_partial()
    cell_rounds = args.cell_rounds if args.cell_rounds is not None else (2 if args.quick else 5)
    cell_options = [option for option, (_, model, _) in CELLS.items() if model in models]
    if cell_rounds > 0 and "stacked" in models and cell_options:
        print(f"measuring {', '.join(cell_options)} interleaved with stacked ({cell_rounds} rounds) ...",
              file=sys.stderr, flush=True)
        results["cells"] = bench_cells(args.device, cell_rounds, cell_options)
        save_partial()
    # the tutorial and the Keras reference seed by seed, interleaved: a shared machine that slows down for a few
    # minutes then weighs on both sides of the ratio, not on one
    job_seeds = [] if args.skip_default_job else list(range(1 if args.quick else args.seeds))
    keras_seeds = list(range(args.keras_seeds)) if args.keras_python else []
    csv = args.tutorial_csv.resolve() if args.keras_dataset == "kaggle" and args.tutorial_csv else None
    results["default_job"], results["tutorial"], results["keras"] = [], [], []
    for seed in sorted(set(job_seeds) | set(keras_seeds)):
        if seed in job_seeds:
            print(f"running the default job, seed {seed} ...", file=sys.stderr, flush=True)
            results["default_job"].append(bench_default_job(seed, args.job_epochs, args.device, args.precision))
            save_partial()
        if seed in keras_seeds:
            print(f"running experiment=tutorial and the Keras reference, seed {seed} ...", file=sys.stderr, flush=True)
            results["tutorial"].append(bench_tutorial(seed, tutorial_data(args.keras_dataset, csv), args.device,
                                                      args.precision))
            results["keras"] += bench_keras(args.keras_python, args.keras_script.resolve(), [seed], 20,
                                            args.keras_dataset, csv)
    text = report(results)
    print(text)
    out.write_text(json.dumps({**results, "report": text}, indent=2))
    print(f"\nwrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
