"""Stock price data: sources (read and clean), splits (date ranges), windows (tensors), the Lightning DataModule."""

from lstm_zoo.data.datamodule import StockDataModule
from lstm_zoo.data.sources import DERIVED, add_derived_features, clean_prices, read_price_csv
from lstm_zoo.data.windows import TARGET_TRANSFORMS, WindowDataset, make_windows
from lstm_zoo.errors import DataError  # defined with the other user errors

__all__ = ["DERIVED", "TARGET_TRANSFORMS", "DataError", "StockDataModule", "WindowDataset", "add_derived_features",
           "clean_prices", "make_windows", "read_price_csv"]
