"""dart_utils: the logic of the DART reproduction (arXiv 2604.16845); notebooks stay thin.

The pipeline is data: `stages.yaml` lists every stage (00 data and splits → 01 Stage I → 02 Stage II audit →
03 Stage III repair → 04 policy → 05 external suites → 06 baselines → 07 statistics), the artifacts it reads and writes and the
parameter sections it depends on; `pipeline.py` runs the notebooks in that order with papermill.

Layers, top to bottom (a module imports only from its own layer or lower ones; `lint-imports` checks it):

pipeline   `python -m dart_utils.pipeline run|check|status|report|list` (what the Makefile calls)
reporting  figures.py (the paper's figures), tables.py (rounding, "—"), page.py (the one-page report)
analysis   statistics.py (McNemar, bootstrap, permutation, Mann–Whitney), main_results.py (Tables 2, 4, 13, 16,
           Figure 3), safety_eval.py (external suites: Tables 5, 35–43)
dart       the paper's method: prompts.py (App. E, F), parsing.py, distill.py (Stage I targets), evaluation.py
           (Table 2 metrics, predictions), harm.py (H), judge.py (App. D), audit.py (Stage II), repair.py (Stage III),
           policy.py (§2.6)
lm         models and calls: student.py, chat.py, generation.py (cached), training.py (trl LoRA), llm.py (teacher
           and judge client, cached), ask.py (ask → validate → follow up), offline_models.py, preflight.py
data       suite.py (the Wang et al. suite), splits.py (Table 6), external.py (BOLD, HolisticBias, RTP, HateCheck),
           checks.py (sizes against the data), upstream.py (`make data`)
core       params.py, stage.py (registry, StageContext, fingerprints), artifacts.py (runs/, manifests, history),
           outputs.py (tables and figures on disk), paper.py (the paper's numbers), hashing.py, sampling.py,
           progress.py
"""
__version__ = "0.2.0"
