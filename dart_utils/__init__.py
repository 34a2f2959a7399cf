"""dart_utils: the shared logic of the DART reproduction. One module per concern; notebooks stay thin.

params    - merged, validated YAML parameters (profiles, students, overrides)
data      - the difference-awareness suite: load, checksum, datasets objects
upstream  - `make data`: the authors' pickles, a restricted unpickler, conversion to JSONL
splits    - stratified, leakage-free train/val/test splits and CV folds (paper §3.1, App. A)
runs      - run directories, manifests and stage stamps
pipeline  - runs the numbered notebooks with papermill (used by the Makefile)
reporting - tables beside the paper's numbers (CSV/Markdown/LaTeX) and figures
"""
__version__ = "0.1.0"
