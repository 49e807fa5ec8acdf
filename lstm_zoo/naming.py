"""Sweep job folder names that can be pasted into a Hydra override as they are (no `=`, `,`, brackets, quotes)."""

from __future__ import annotations

import hashlib
import re

from omegaconf import OmegaConf

# characters Hydra's override grammar accepts unquoted inside a value, minus the ones with a meaning in paths
# or shells (`/`, `\`, `$`, `*`, `?`, `|`, `@`, `%`): letters, digits, `_`, `.`, `+`, `-`
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+\-]")


def job_folder_name(override_dirname: str, limit: int = 160) -> str:
    """`model-stacked_seed-1` from Hydra's override_dirname (kv_sep `-`, item_sep `_`, see conf/hydra/default.yaml).

    Deterministic in the overrides (Hydra sorts them), so a re-run of a sweep finds the same folders. Commas inside
    a value (`data.features=[High,Low]`) become `+`, a deletion `~key` becomes `no-key`, and every other character
    outside [A-Za-z0-9_.+-] becomes `-` or is dropped (brackets, quotes, braces). A name longer than `limit` (the
    file system allows 255) is cut and ends in a hash of the whole, so it stays unique.
    """
    name = re.sub(r"(^|_)~", r"\1no-", override_dirname).replace(",", "+")
    name = _UNSAFE.sub("-", re.sub(r"[\[\]{}()'\"]", "", name))
    if len(name) <= limit:
        return name
    return f"{name[: limit - 9]}-{hashlib.sha1(override_dirname.encode()).hexdigest()[:8]}"


def register_resolvers() -> None:
    """`${job_folder:...}` for conf/hydra/default.yaml."""
    OmegaConf.register_new_resolver("job_folder", job_folder_name, replace=True)
