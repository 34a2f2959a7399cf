"""The paper's method: prompts, parsing, Stage I targets, metrics, harm scores, judge, audit, repair, policy."""
