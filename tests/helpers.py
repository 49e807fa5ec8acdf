"""What the tests share: synthetic price CSVs, composed Hydra configs, and entry points run in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
_MODEL_CONFIGS = {p.stem: OmegaConf.load(p) for p in (CONF / "model").glob("*.yaml")}
# every model of the zoo, as conf/model holds them; a file without _target_ is an alias (lstm = stacked)
MODELS = sorted(name for name, cfg in _MODEL_CONFIGS.items() if "_target_" in cfg)


def fitted_models() -> list[str]:
    """conf/model names of the models fit in closed form (their `_target_` is a lstm_zoo.models.FittedForecaster),
    without epochs."""
    from lstm_zoo.models import FittedForecaster

    return [name for name in MODELS if issubclass(get_class(_MODEL_CONFIGS[name]._target_), FittedForecaster)]


def trained_models() -> list[str]:
    """conf/model names of the models trained by gradient descent in the Lightning loop: every model but the
    fitted ones (the recurrent zoo, dlinear, any model added to conf/model); the zoo, export, interval and
    checkpoint tests run on each."""
    fitted = set(fitted_models())
    return [name for name in MODELS if name not in fitted]


def model_fields(name: str) -> set[str]:
    """The fields conf/model/<name>.yaml sets (hidden_size, num_layers, kernel_size...), without `_target_`."""
    return set(_MODEL_CONFIGS[name]) - {"_target_", "defaults"}


# a small model: applied to the fields a model's config has (a recurrent model: 1 layer of 8 units; dlinear: none)
FAST_MODEL = {"hidden_size": 8, "num_layers": 1}
# conf/debug/fast.yaml (1 epoch of 4 batches, 10-day windows, quiet) and a recurrent model of 1 layer of 8 units:
# for the default model (stacked) or a recurrent one chosen with it; fast(name) suits any model
FAST = ["debug=fast", *(f"model.{key}={value}" for key, value in FAST_MODEL.items())]
# debug=fast draws no forecast plot (it was 40% of such a run); a test of the plot adds it back
PLOT = "+callbacks.forecast_plot._target_=lstm_zoo.callbacks.ForecastPlot"


def fast(name: str) -> list[str]:
    """FAST for `model=<name>`: debug=fast, and only the FAST_MODEL overrides whose fields its config has."""
    fields = model_fields(name)
    return ["debug=fast", f"model={name}", *(f"model.{k}={v}" for k, v in FAST_MODEL.items() if k in fields)]


def write_prices_csv(path: Path, start: str = "2020-01-01", end: str = "2022-12-31", seed: int = 0,
                     dirty: bool = False, name: str = "IBM") -> Path:
    """Business-day OHLCV random walk in the tutorial's format (Date,Open,High,Low,Close,Volume,Name).

    With dirty=True it also carries the tutorial file's defects: empty Open/Low cells on one day and a
    trailing `-1,,,,,,` line.
    """
    dates = pd.bdate_range(start, end)
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 1, len(dates)))
    frame = pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), "Open": close + rng.normal(0, 0.3, len(dates)),
                          "High": close + 1 + rng.random(len(dates)), "Low": close - 1 - rng.random(len(dates)),
                          "Close": close, "Volume": rng.integers(1_000_000, 5_000_000, len(dates)), "Name": name})
    frame = frame.round(2).astype({"Open": object, "Low": object})
    if dirty:
        frame.loc[len(frame) // 2, ["Open", "Low"]] = ""
    frame.to_csv(path, index=False)
    if dirty:
        with path.open("a") as f:
            f.write("-1,,,,,,\n")
    return path


def write_tickers_csv(path: Path, levels: dict[str, float] | None = None, start: str = "2015-01-01",
                      end: str = "2022-12-31", seed: int = 0) -> Path:
    """Several tickers in one file (the layout of the tutorial's all_stocks CSV): geometric random walks whose price
    levels differ as much as real stocks do (default AAA near 500, BBB near 25), on the same business days."""
    dates = pd.bdate_range(start, end)
    rng = np.random.default_rng(seed)
    frames = []
    for name, level in (levels or {"AAA": 500.0, "BBB": 25.0}).items():
        close = level * np.exp(np.cumsum(rng.normal(0, 0.015, len(dates))))
        frames.append(pd.DataFrame({"Date": dates.strftime("%Y-%m-%d"), "Open": close * (1 + rng.normal(0, 0.003,
                                    len(dates))), "High": close * (1.01 + 0.01 * rng.random(len(dates))),
                                    "Low": close * (0.99 - 0.01 * rng.random(len(dates))), "Close": close,
                                    "Volume": rng.integers(1_000_000, 5_000_000, len(dates)), "Name": name}))
    pd.concat(frames).round(4).to_csv(path, index=False)
    return path


def compose_train(overrides: list[str] | None = None, output_dir: Path | None = None) -> DictConfig:
    """`conf/train.yaml` composed as `python train.py <overrides>` would, with outputs in `output_dir`."""
    extra = [f"output_dir={output_dir}"] if output_dir is not None else []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=[*(overrides or []), *extra])


def compose_entry(name: str, overrides: list[str], output_dir: Path) -> DictConfig:
    """conf/<name>.yaml (eval, predict, export) composed as its entry point would, with outputs in `output_dir`."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=[*overrides, f"output_dir={output_dir}"])


def sweep_jobs(experiment: str) -> list[list[str]]:
    """The override lists of every job `python train.py -m experiment=<name>` launches (cartesian product), with a
    `glob(*)` over a config group expanded to that group's files, as Hydra's sweeper does."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    params = [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    jobs: list[list[str]] = [[]]
    for override in OverridesParser.create().parse_overrides(params):
        if isinstance(override.value(), Glob):
            values = override.value().filter(sorted(p.stem for p in (CONF / override.key_or_group).glob("*.yaml")))
        elif override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [override.value()]
        jobs = [[*job, f"{override.key_or_group}={v}"] for job in jobs for v in values]
    return jobs


def cli(script: str, args: Sequence[str] = (), cwd: Path = ROOT, timeout: float = 300, env: dict | None = None,
        check: bool = False) -> subprocess.CompletedProcess:
    """`python <script> <args>` (train.py, eval.py, scripts/compare.py...) in `cwd`, stdout and stderr together in
    `.stdout`, in its own process group, killed as a group on timeout; `check=True` asserts it exited 0.

    tests/reliability is on its PYTHONPATH, so `+callbacks.x._target_=reliability_helpers.KillAt` works."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests" / "reliability")]),
           "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1", **(env or {})}
    env.pop("LOCAL_RANK", None)
    # SIGINT back to its default: a shell that started this test run in the background (`cmd &`, nohup, some CI
    # runners) ignores SIGINT, children inherit that, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # Lightning absorbs SIGTERM; DDP children share the group
        out, _ = proc.communicate()
        raise AssertionError(f"{script} {list(args)} did not finish within {timeout}s:\n{out[-3000:]}") from None
    if check:
        assert proc.returncode == 0, f"{script} {list(args)} exited {proc.returncode}:\n{out[-8000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def run_main(script: str, args: Sequence[str] = (), cwd: Path = ROOT, env: dict | None = None,
             check: bool = False) -> subprocess.CompletedProcess:
    """`python <script> <args>` run inside this test process: the same Hydra main, command line, config composition,
    run folder, log lines and exit status as `cli`, without a new interpreter importing torch and Lightning (about
    8 s of CPU per process). For tests of what a command does, not of the process itself: signals, kills, DDP,
    joblib workers, timeouts, concurrent runs and import side effects need `cli`."""
    import contextlib
    import io
    import logging
    import runpy

    root = logging.getLogger()
    handlers, level, argv, old_cwd = root.handlers[:], root.level, sys.argv, os.getcwd()
    patched = {"HYDRA_FULL_ERROR": "0", **(env or {})}
    saved = {key: os.environ.get(key) for key in patched}
    out, code = io.StringIO(), 0
    try:
        os.environ.update(patched)
        os.chdir(cwd)
        sys.argv = [str(ROOT / script), *map(str, args)]
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                runpy.run_path(str(ROOT / script), run_name="__main__")
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else int(exit_.code is not None)
    finally:
        sys.argv = argv
        os.chdir(old_cwd)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for handler in root.handlers[:]:  # Hydra's job logging bound its handlers to `out` and the run's log file
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
    text = out.getvalue()
    if check:
        assert code == 0, f"{script} {list(args)} exited {code}:\n{text[-8000:]}"
    return subprocess.CompletedProcess([script, *args], code, text, "")


def read_metrics(run_dir: Path) -> dict:
    """A run folder's metrics.json."""
    return json.loads((Path(run_dir) / "metrics.json").read_text())
