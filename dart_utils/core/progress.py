"""Progress that a researcher can see, in Jupyter and in the terminal that runs `make all`.

Why: a stage can run for half an hour. In Jupyter a progress bar is a widget; under the pipeline the notebook's
widgets never reach the terminal, so the pipeline sets DART_PROGRESS (seconds between updates) and every bar of the
package becomes a plain text bar on stderr, which papermill forwards to the terminal as the cell runs (and which
stays small in the executed notebook). Step banners (`StageContext.step`) go to stdout the same way.
"""
from __future__ import annotations

import os
import sys

PROGRESS_ENV = "DART_PROGRESS"


def under_pipeline() -> bool:
    return bool(os.environ.get(PROGRESS_ENV))


def bar(iterable=None, *, total: int | None = None, desc: str | None = None, unit: str = "it",
        disable: bool = False):
    """A tqdm bar: a widget in Jupyter, a text bar on stderr updated every DART_PROGRESS seconds under the
    pipeline (`python -m dart_utils.pipeline run`)."""
    if under_pipeline():
        from tqdm.std import tqdm
        try:
            every = float(os.environ[PROGRESS_ENV])
        except ValueError:
            every = 10.0
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, file=sys.stderr,
                    mininterval=every, maxinterval=max(every, 10.0), dynamic_ncols=False, ncols=100)
    from tqdm.auto import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable)
