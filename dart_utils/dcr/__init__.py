"""DCR (arXiv 2603.03323): contrastive refinement against over-refusal, then safety SFT, on the DART rails.

Pipeline (notebooks 08-10): ``data`` (the staged stand-ins for DCR's data, checksummed) -> ``contrastive`` (Stage A:
Circle loss at layer l, tail frozen) -> ``safety_sft`` (Stage B: the Safety-Tuned-LLaMAs SFT, with and without
Stage A) -> ``refusal`` (compliance / defence success by string match and by the judge) and ``dynamics`` (first-token
refusal probability, eNTK similarity). What is a paper fact and what is our guess: ../shared/paper/DCR_notes.md and
docs/dcr.md.
"""
