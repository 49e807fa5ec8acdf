"""Read prices: the embedded bokeh_sampledata file or a CSV; clean rows, pick tickers, derive features (pure pandas)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from lstm_zoo.errors import DataError

EMBEDDED = "bokeh_sampledata {} (2000-03-01 to 2013-03-01)"  # {}: IBM, or "stocks" for several
EMBEDDED_TICKERS = ("AAPL", "FB", "GOOG", "IBM", "MSFT")
TICKER_COLUMNS = ("Name", "Ticker", "Symbol")
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+(\.\d*)?$")
_DAY_MONTH_YEAR = re.compile(r"^(\d{1,2})([./-])(\d{1,2})\2(\d{4}|\d{2})\b")  # 03/01/2006: which is the day?

# Derived features: name -> (raw columns it reads, formula on the cleaned frame). Only backward-looking
# operations (same-day values, shift(+1), diff), so a row never reads the day it helps to predict or later.
DERIVED: dict[str, tuple[tuple[str, ...], Callable[[pd.DataFrame], pd.Series]]] = {
    "range": (("High", "Low"), lambda f: f["High"] - f["Low"]),  # the day's trading range
    "gap": (("Open", "Close"), lambda f: f["Open"] - f["Close"].shift(1)),  # overnight gap from yesterday's close
    "log_volume": (("Volume",), lambda f: np.log1p(f["Volume"])),
    "return": (("Close",), lambda f: np.log(f["Close"]).diff()),  # daily log return of the close
}


def add_derived_features(frame: pd.DataFrame, names: list[str], source: str = "data") -> pd.DataFrame:
    """`frame` plus the derived columns `names` (see DERIVED), without the leading row(s) a shift leaves empty."""
    if not names:
        return frame
    derived = pd.DataFrame({name: DERIVED[name][1](frame) for name in names}, index=frame.index)
    derived = derived.replace([np.inf, -np.inf], np.nan)
    lead = int(derived.notna().all(axis=1).to_numpy().argmax())  # rows before the first complete one
    bad = derived.iloc[lead:].isna().any()
    if bad.any() or derived.iloc[lead:].empty:
        raise DataError(f"{source}: derived feature(s) {list(bad[bad].index)} are undefined on some days (e.g. a "
                        "log of a zero or negative price). Fix: drop them from data.features.")
    return pd.concat([frame, derived], axis=1).iloc[lead:]


def adjust_prices(frame: pd.DataFrame) -> pd.DataFrame:
    """Split- and dividend-adjusted prices: Open/High/Low/Close x (Adj Close / Close), Volume / that ratio.

    A stock split halves an as-traded price overnight, a jump no model and no baseline can forecast, which would
    dominate every error measure of its test period; the adjusted series has no such jump.
    """
    ratio = frame["Adj Close"] / frame["Close"]
    adjusted = frame.copy()
    for column in ("Open", "High", "Low", "Close"):
        if column in adjusted:
            adjusted[column] = frame[column] * ratio
    if "Volume" in adjusted:
        adjusted["Volume"] = frame["Volume"] / ratio
    return adjusted


def load_embedded() -> pd.DataFrame:
    """Real daily OHLCV of AAPL, FB, GOOG, IBM and MSFT shipped by `bokeh_sampledata` (no network), with a Name column.

    Prices are as traded (AAPL's 2:1 splits of 2000 and 2005 and MSFT's of 2003 included), plus Adj Close.
    """
    from bokeh_sampledata import stocks

    frame = pd.concat([pd.DataFrame(getattr(stocks, name)).assign(name=name) for name in EMBEDDED_TICKERS])
    return frame.reset_index(drop=True).rename(columns=lambda c: "Adj Close" if c == "adj_close" else c.title())


def read_price_csv(path: str | Path, sep: str = ",") -> pd.DataFrame:
    """Read a CSV as text columns, turning every way a file can be unreadable into a DataError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data.path: no such file: {path}. Fix: pass an existing CSV, e.g. data.path=/abs/IBM.csv")
    try:
        frame = pd.read_csv(path, sep=sep, dtype=str, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty. Fix: point data.path at a CSV with a header and rows.") from None
    except (UnicodeDecodeError, pd.errors.ParserError) as err:
        raise DataError(f"{path}: not a readable text CSV ({type(err).__name__}). Fix: pass a CSV file.") from None
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err}). Fix: check the file's permissions.") from None
    if frame.empty:
        raise DataError(f"{path}: has a header ({', '.join(map(str, frame.columns))}) but no data rows. "
                        "Fix: point data.path at a CSV with rows.")
    if frame.shape[1] == 1:
        only = str(frame.columns[0])
        hint = next((d for d in (";", "\t", "|") if d in only), None)
        if hint is not None:
            raise DataError(f"{path}: read as one column {only!r}; the file looks {hint!r}-separated. "
                            f"Fix: data.sep={hint!r}")
    return frame


def check_columns(raw: pd.DataFrame, columns: list[str], adjust: bool, source: str, trained: bool = False) -> None:
    """`raw` (a file as read) has every column `columns` (features and target) need, the derived ones' inputs
    included, and Close and Adj Close when `adjust`. `trained`: `columns` are a checkpoint's; the data must fit."""
    for name in [c for c in columns if c in DERIVED]:
        missing = [c for c in DERIVED[name][0] if c not in raw.columns]
        if missing:
            raise DataError(f"{source}: derived feature {name!r} in data.features needs column(s) {missing}, "
                            f"which the file lacks (it has {list(map(str, raw.columns))}). Fix: drop {name!r}.")
    if adjust and not {"Close", "Adj Close"} <= set(raw.columns):
        raise DataError(f"{source}: data.adjust=true needs the columns Close and Adj Close, and the file has "
                        f"{list(map(str, raw.columns))}. Fix: data.adjust=false")
    unknown = [c for c in columns if c not in raw.columns and c not in DERIVED]
    if unknown and trained:
        raise DataError(f"{source}: column(s) {unknown} not found (the file has {list(map(str, raw.columns))}), but "
                        f"the checkpoint's model was trained on {columns}. Fix: data.path=<a file with those "
                        "columns>, or data.date_column / data.sep if the file is read wrongly.")
    if unknown:
        raise DataError(f"{source}: column(s) {unknown} not found; the file has {list(map(str, raw.columns))} and "
                        f"the derived features are {list(DERIVED)}. Fix: set data.target / data.features to one of "
                        "those.")


def _to_numbers(column: pd.Series) -> tuple[pd.Series, int]:
    """Parse a text column as floats; '1,234.5' (thousands separators) counts as 1234.5, inf as missing."""
    text = column.astype("string").str.strip()
    has_thousands = text.str.match(_THOUSANDS).fillna(False).astype(bool)
    text = text.where(~has_thousands, text.str.replace(",", "", regex=False))
    numbers = pd.to_numeric(text, errors="coerce").astype(float)
    return numbers.replace([np.inf, -np.inf], np.nan), int(has_thousands.sum())


def parse_dates(column: pd.Series, date_format: str | None = None, date_column: str = "Date",
                source: str = "data") -> pd.Series:
    """Parse a text date column (NaT where a cell does not parse), with `date_format` (strptime) if given.

    Without a format, ISO dates (YYYY-MM-DD, the tutorial's) and other unambiguous ones are read as pandas reads
    them, but numeric day/month/year dates (03/01/2006) are refused: pandas would read them month-first, swap day
    and month of a day-first file and drop its days above 12. The error names the format that fits the file.
    """
    text = column.astype("string").str.strip()
    if date_format is None:
        parts = text.str.extract(_DAY_MONTH_YEAR).dropna()
        if not parts.empty:
            first, second = parts[0].astype(int), parts[2].astype(int)
            sep, year = parts[1].iloc[0], "%Y" if len(parts[3].iloc[0]) == 4 else "%y"
            day_first, month_first = f"%d{sep}%m{sep}{year}", f"%m{sep}%d{sep}{year}"

            def example(mask: pd.Series) -> str:
                return text[mask[mask].index[0]]

            if (first > 12).any() and not (second > 12).any():
                reading = f"day-first dates (e.g. {example(first > 12)!r})"
                fix = f"data.date_format='{day_first}'"
            elif (second > 12).any() and not (first > 12).any():
                reading = f"month-first dates (e.g. {example(second > 12)!r})"
                fix = f"data.date_format='{month_first}'"
            elif (first > 12).any():
                reading = f"dates in both orders ({example(first > 12)!r} and {example(second > 12)!r})"
                fix = "rewrite the column as YYYY-MM-DD"
            else:
                reading = f"dates whose day/month order is ambiguous (e.g. {example(first > 0)!r})"
                fix = f"data.date_format='{day_first}' (day first) or data.date_format='{month_first}' (month first)"
            raise DataError(f"{source}: column {date_column!r} holds {reading}, which would be misread. Fix: {fix}")
    dates = pd.to_datetime(text, errors="coerce", format=date_format)
    given = text.notna() & (text != "")
    failed = dates.isna() & given
    if failed.sum() * 2 > given.sum():  # most rows unreadable: a format problem, not a few damaged rows
        how = f"with data.date_format={date_format!r}" if date_format else "as dates"
        raise DataError(f"{source}: {int(failed.sum())} of {int(given.sum())} value(s) of column {date_column!r} do "
                        f"not parse {how} (e.g. {text[failed].head(3).tolist()}). Fix: data.date_format=<their "
                        "strptime format, e.g. '%d.%m.%Y'>, or data.date_column=<the date column>")
    return dates


def clean_prices(frame: pd.DataFrame, columns: list[str], date_column: str = "Date", ticker: str | None = None,
                 source: str = "data", date_format: str | None = None,
                 notes: list[str] | None = None) -> pd.DataFrame:
    """Date-indexed float frame of `columns`: bad rows dropped, dates sorted and unique, one warning for all of it.

    With a `notes` list, what was dropped or changed is appended to it instead of warned about, so that a caller
    cleaning several series of one file warns once for all of them.
    """
    missing = [c for c in [date_column, *columns] if c not in frame.columns]
    if missing:
        field = "data.date_column" if date_column in missing else "data.target / data.features"
        raise DataError(f"{source}: column(s) {missing} not found; the file has {list(map(str, frame.columns))}. "
                        f"Fix: set {field} to one of those.")
    frame = select_ticker(frame, ticker, source)
    found: list[str] = []
    dates = parse_dates(frame[date_column], date_format, date_column, source)
    values = {}
    for name in columns:
        numbers, n_thousands = _to_numbers(frame[name])
        values[name] = numbers.to_numpy()
        if n_thousands:
            found.append(f"read {n_thousands} value(s) of {name} with thousands separators (e.g. '1,234.5' as 1234.5)")
    clean = pd.DataFrame(values, index=pd.DatetimeIndex(dates.to_numpy(), name="Date"))
    bad_date = clean.index.isna()
    bad_value = clean.isna().any(axis=1).to_numpy() & ~bad_date
    if bad_date.any():
        found.append(f"dropped {int(bad_date.sum())} row(s) whose {date_column} does not parse "
                     f"(e.g. {frame[date_column][bad_date].astype(str).head(3).tolist()})")
    if bad_value.any():
        shown = [d.date().isoformat() for d in clean.index[bad_value][:5]]
        found.append(f"dropped {int(bad_value.sum())} row(s) with empty, non-numeric or infinite values in "
                     f"{columns} on {shown}{' ...' if bad_value.sum() > 5 else ''}")
    clean = clean[~bad_date & ~bad_value]
    if not clean.index.is_monotonic_increasing:
        found.append("sorted rows by date (the file was not in date order)")
        clean = clean.sort_index(kind="stable")
    duplicated = clean.index.duplicated(keep="last")
    if duplicated.any():
        shown = sorted({d.date().isoformat() for d in clean.index[duplicated]})[:5]
        found.append(f"kept the last of {int(duplicated.sum())} duplicate date row(s) (dates {shown})")
        clean = clean[~duplicated]
    if clean.empty:
        raise DataError(f"{source}: no usable rows left for columns {columns} after dropping unparseable ones. "
                        "Fix: check data.date_column, data.target and data.features against the file.")
    if notes is not None:
        notes.extend(found)
    elif found:
        warnings.warn(f"{source}: " + "; ".join(found) + ".", stacklevel=2)
    return clean


def _ticker_column(frame: pd.DataFrame) -> str | None:
    return next((c for c in TICKER_COLUMNS if c in frame.columns), None)


def ticker_names(frame: pd.DataFrame) -> list[str]:
    """The tickers of the file's Name/Ticker/Symbol column, sorted ([] without such a column)."""
    column = _ticker_column(frame)
    return [] if column is None else sorted(frame[column].dropna().astype(str).str.strip().unique())


def select_ticker(frame: pd.DataFrame, ticker: str | None, source: str) -> pd.DataFrame:
    """The rows of `ticker`; with None the file must hold one series (no ticker column, or one ticker in it)."""
    column = _ticker_column(frame)
    if column is None:
        if ticker is not None:
            raise DataError(f"{source}: data.ticker={ticker!r} was given but the file has no {TICKER_COLUMNS} column. "
                            "Fix: data.ticker=null")
        return frame
    names = ticker_names(frame)
    if ticker is None:
        if len(names) > 1:
            raise DataError(f"{source}: column {column!r} holds {len(names)} tickers {names[:20]}. "
                            f"Fix: pick one with data.ticker=<name>, e.g. data.ticker={names[0]}, or several with "
                            f"data.tickers=[{','.join(names[:2])}] (or data.tickers=all)")
        return frame
    if ticker not in names:
        raise DataError(f"{source}: data.ticker={ticker!r} not in column {column!r}; it holds {names[:20]}. "
                        f"Fix: data.ticker={names[0]}")
    return frame[frame[column].astype(str).str.strip() == ticker]


def split_tickers(frame: pd.DataFrame, tickers: list[str] | str, source: str) -> dict[str, pd.DataFrame]:
    """The rows of each of `tickers` (a list, or "all"), in that order, from the file's Name/Ticker/Symbol column."""
    column = _ticker_column(frame)
    if column is None:
        raise DataError(f"{source}: data.tickers={tickers} was given but the file has no {TICKER_COLUMNS} column. "
                        "Fix: data.tickers=null")
    names = frame[column].astype("string").str.strip()
    held = sorted(names.dropna().unique())
    wanted = held if tickers == "all" else list(dict.fromkeys(tickers))
    missing = [t for t in wanted if t not in held]
    if missing or not wanted:
        raise DataError(f"{source}: data.tickers: {missing or '[]'} not in column {column!r}, which holds "
                        f"{held[:20]}{' ...' if len(held) > 20 else ''}. Fix: data.tickers=[{','.join(held[:2])}] "
                        "(names from that list) or data.tickers=all")
    return {name: frame[(names == name).fillna(False).to_numpy(dtype=bool)] for name in wanted}


def untickered_rows(frame: pd.DataFrame) -> str | None:
    """A cleaning note counting the rows whose ticker cell is empty (the end of the all_stocks files): selecting
    tickers drops them."""
    column = _ticker_column(frame)
    if column is None:
        return None
    blank = frame[column].astype("string").str.strip().fillna("").eq("")
    return f"dropped {int(blank.sum())} row(s) with an empty {column} (no ticker)" if blank.any() else None
