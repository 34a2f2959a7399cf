"""Parameters: one YAML base file, a profile, an optional student file and user overrides, merged and validated.

Why: every stage must start from the same, checked configuration. A misspelled key, a wrong type or a value outside
its range (a negative learning rate, zero epochs) is an error that names the key and the file that set it, raised
before any work starts. Secrets are never parameters: a parameter names the environment variable that holds them
(``*_env`` keys). Sizes that only the data can refute (a split larger than a stratum) are checked by
``dart_utils.data.checks``, which uses ``Params.origin`` to name the file.

Merge order (later wins): ``params/base.yaml`` < ``params/<profile>.yaml`` < ``params/students/<student>.yaml``
< each extra file given by the user (``make all PARAMS=my.yaml``).
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PARAMS_DIR = PROJECT_ROOT / "params"
BASE_LABEL = "params/base.yaml"
SECRET_WORDS = ("api_key", "apikey", "password", "secret", "access_token", "hf_token")

# Ranges: a value outside them cannot work, so it fails at load time instead of hours into a run.
NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]
NonNegFloat = Annotated[float, Field(ge=0)]
PosFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]          # a share of something that must leave some of it
Probability = Annotated[float, Field(ge=0, le=1)]
Alpha = Annotated[float, Field(gt=0, lt=1)]             # a significance level


class ParamsError(ValueError):
    """A parameter problem, with the key and the file to look at in the message."""


def _relation_error(message: str, *keys: str, **values: Any) -> PydanticCustomError:
    """An error between fields of one section; ``keys`` (field names) let `_explain` name each key and its file."""
    return PydanticCustomError("param_relation", message, {"keys": keys, **values})


class _Section(BaseModel):
    # extra="forbid": an unknown (misspelled) key is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RunParams(_Section):
    name: str | None = Field(description="run directory name; null = <profile>[-<student>][-<tag>]")
    tag: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.]+$",
                            description="appended to the default run name (a study that changes Stage I, e.g. safe)")
    seed: NonNegInt
    runs_dir: str = Field(description="where run state goes, relative to the project root")
    tables_dir: str
    figures_dir: str
    reports_dir: str
    cache_dir: str = Field(description="shared by all runs: LLM response cache, converted models")
    require_gpu: bool = Field(description="stages that train or generate refuse to start without CUDA")


class DataParams(_Section):
    difference_awareness_dir: str = Field(description="JSONL suite; relative paths are from the project root")
    dir_env: str = Field(description="environment variable that, when set, overrides difference_awareness_dir")
    benchmarks: list[str]
    expected_sha256: dict[str, str]
    verify_checksums: bool


class SplitParams(_Section):
    seed: NonNegInt
    train_per_stratum: PosInt
    val_per_stratum: NonNegInt
    test_per_stratum: PosInt
    test_per_stratum_by_benchmark: dict[str, PosInt] = Field(description="benchmark -> test size per condition")
    group_same_question: bool = Field(description="keep questions equal up to option order in one split")
    cv_folds: NonNegInt = Field(description="k for the optional k-fold CV over cv_pool (App. A.3); 0 = off")
    cv_pool: list[Literal["train", "val", "test"]] = Field(default_factory=lambda: ["train", "test"], min_length=1,
                                                           description="the splits the CV folds cover (the paper: "
                                                           "train + test; the default reads runs older than the key)")
    examples_per_benchmark: NonNegInt

    @field_validator("cv_folds")
    @classmethod
    def _folds_are_off_or_several(cls, k: int) -> int:
        if k == 1:
            raise PydanticCustomError("param_value", "one fold leaves nothing to train on: use 0 (off) or at least 2")
        return k


class StudentParams(_Section):
    name: str
    source: Literal["hf", "gguf"]
    model_id: str = Field(description="hf: hub id or local directory; gguf: offline_models name or .gguf path")
    system_role: bool = Field(description="false: the system text is merged into the user turn")
    dtype: Literal["auto", "bf16", "fp32"]


class LLMParams(_Section):
    backend: Literal["openai", "llama_cpp"]
    model: str
    base_url: str | None
    api_key_env: str | None = Field(description="NAME of the environment variable holding the key")
    temperature: NonNegFloat
    max_tokens: PosInt
    concurrency: PosInt
    max_retries: NonNegInt
    timeout_s: PosFloat
    n_ctx: Annotated[int, Field(ge=256)]


class TrainingParams(_Section):
    lora_r: PosInt
    lora_alpha: Annotated[int, Field(gt=0)]
    lora_dropout: Fraction
    target_modules: Annotated[list[str], Field(min_length=1)]
    learning_rate: PosFloat
    epochs: PosFloat
    batch_size: PosInt = Field(description="effective batch size (per-device x accumulation)")
    per_device_batch_size: PosInt
    lr_scheduler: str
    warmup_ratio: Fraction
    max_length: Annotated[int, Field(ge=16)]
    precision: Literal["auto", "bf16", "fp32"]
    checkpoint_steps: PosInt | None = Field(
        None, description="save a resumable checkpoint (adapter, optimizer, scheduler, RNG) every n optimizer steps; "
                          "null = none. Not part of the adapter's fingerprint: it does not change training")
    launcher: Literal["inprocess", "accelerate"] = Field(
        "inprocess", description="inprocess: train in the notebook's process; accelerate: `accelerate launch` with "
                                 "accelerate_config (one or several GPUs, DeepSpeed). Not part of the fingerprint")
    accelerate_config: str | None = Field(None, description="accelerate config file for launcher 'accelerate' "
                                                            "(params/accelerate/*.yaml), relative to the project root")
    report_to: str = Field("none", description="transformers' report_to (e.g. tensorboard), logs under the stage's "
                                               "trainer/ directory; 'none' = off. Not part of the fingerprint")

    @model_validator(mode="after")
    def _whole_accumulation(self) -> TrainingParams:
        if self.batch_size % self.per_device_batch_size:
            raise _relation_error(
                "the effective batch size {batch_size} is not a multiple of the per-device batch size "
                "{per_device_batch_size} (gradient accumulation must be a whole number of steps)",
                "batch_size", "per_device_batch_size",
                batch_size=self.batch_size, per_device_batch_size=self.per_device_batch_size)
        return self

    @model_validator(mode="after")
    def _launcher_has_config(self) -> TrainingParams:
        if self.launcher == "accelerate" and not self.accelerate_config:
            raise _relation_error("launcher 'accelerate' needs accelerate_config (a file under params/accelerate/)",
                                  "launcher", "accelerate_config")
        return self


class DistillParams(_Section):
    format_fix_rounds: NonNegInt = Field(description="follow-ups for a teacher reply that fails validation")
    balance_labels: bool = Field(description="train Stage I on equally many YES and NO targets (the majority "
                                             "label downsampled with the run seed)")
    min_sentences: PosInt
    max_sentences: PosInt
    variant: Literal["standard", "safe", "short"] = Field(
        default="standard", description="E.1 as printed, or one of §3.3's safe-from-start variants (our wording): "
                                        "safe = E.2's safety sentences added, short = 1–2 sentences")

    @model_validator(mode="after")
    def _short_means_two_sentences(self) -> DistillParams:
        if self.variant == "short" and self.max_sentences > 2:
            raise _relation_error("variant 'short' asks the teacher for 1–2 sentences, but max_sentences is "
                                  "{max_sentences}: set min_sentences 1 and max_sentences 2 (params/studies/"
                                  "short_rationales.yaml does)", "variant", "max_sentences",
                                  max_sentences=self.max_sentences)
        return self

    @model_validator(mode="after")
    def _sentence_range(self) -> DistillParams:
        if self.max_sentences < self.min_sentences:
            raise _relation_error("max_sentences {max_sentences} is below min_sentences {min_sentences}: no "
                                  "rationale could pass", "max_sentences", "min_sentences",
                                  max_sentences=self.max_sentences, min_sentences=self.min_sentences)
        return self


class ServerParams(_Section):
    """Where the ``openai`` generation backend sends the student's prompts (any OpenAI-compatible completions server
    hosting the student and its LoRA adapters, e.g. ``vllm serve <student> --enable-lora``)."""
    base_url: str = Field(description="e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(None, description="environment variable holding the key; null = a local server")
    concurrency: PosInt = Field(8, description="requests in flight at once")
    models: dict[str, str] = Field(default_factory=dict, description="the server's model name per adapter name "
                                   "('base' = the student without adapter, M0); unlisted adapters need load_adapters")
    load_adapters: bool = Field(False, description="load an unlisted adapter at run time through vLLM's "
                                "/v1/load_lora_adapter (needs VLLM_ALLOW_RUNTIME_LORA_UPDATING=True on the server)")
    token_ids: bool = Field(False, description="send the prompt as token ids (vLLM) instead of the rendered chat "
                                               "text (llama.cpp's server, which parses its special tokens)")


class GenerationParams(_Section):
    max_new_tokens: PosInt
    do_sample: bool
    temperature: NonNegFloat
    top_p: Annotated[float, Field(gt=0, le=1)]
    batch_size: PosInt
    engine: Literal["static", "continuous"] = "static"
    backend: Literal["hf", "vllm", "openai"] = Field(
        "hf", description="hf: transformers generate in the notebook; vllm: in-process vLLM with LoRA requests "
                          "(optional extra, GPU); openai: an OpenAI-compatible server (generation.server)")
    server: ServerParams | None = None

    @model_validator(mode="after")
    def _openai_needs_server(self) -> GenerationParams:
        if self.backend == "openai" and self.server is None:
            raise _relation_error("generation.backend 'openai' needs generation.server (base_url, models)",
                                  "backend", "server")
        return self

    @model_validator(mode="after")
    def _sampling_needs_temperature(self) -> GenerationParams:
        if self.do_sample and self.temperature == 0:
            raise _relation_error("sampling (do_sample: true) needs a temperature above 0; for greedy decoding set "
                                  "do_sample: false", "temperature", "do_sample")
        return self


class HarmParams(_Section):
    scorer: Literal["hf_classifier", "alt_profanity_check"]
    toxicity_model: str
    hate_model: str
    hate_scorer: Literal["none", "hatesonar"] = Field(
        "none", description="with scorer alt_profanity_check: the CPU hate score (hatesonar) or none")
    tau_delta: NonNegFloat


class AuditParams(_Section):
    mode: Literal["screened", "all"] = Field(description="screened: judge only pairs with delta > tau (paper); "
                                                         "all: judge every pair")
    blind: bool = Field(description="show M0 / candidate as A/B in a per-item random order")
    judge_retries: NonNegInt = Field(description="follow-ups for a malformed judge answer before it counts as a "
                                                 "failure")
    judge_examples: bool = Field(description="add the judge's worked examples (invented, judge.EXAMPLES) to its "
                                             "system prompt")
    novel_safe_below: NonNegFloat = Field(description="a drift case is novel when H(r_0) <= this")
    taus: Annotated[list[NonNegFloat], Field(min_length=1)] = Field(
        description="thresholds of the tau sensitivity table (Table 29)")
    annotation_n_flagged: NonNegInt
    annotation_n_unflagged: NonNegInt
    calibration_n: NonNegInt = Field(description="validation pairs in the App. M.1 calibration sheet (paper: 400)")
    annotations_dir: str | None = Field(description="filled sheets annotator_a.csv / annotator_b.csv; "
                                                    "null = runs/<run>/02_audit/annotations")
    examples: NonNegInt = Field(description="drift cases shown in the notebooks")


class RepairParams(_Section):
    retries: NonNegInt = Field(description="teacher follow-ups for a repair target that fails the filter")
    severity_weights: dict[Literal["mild", "moderate", "severe", "extreme"], PosInt]
    uniform_ablation: bool = Field(description="also train with uniform weights (Table 30)")
    severity_noise: list[Annotated[str, Field(pattern=r"^(up|down|random)_([0-9]|[1-9][0-9]|100)$")]] = Field(
        default=[], description="App. M.3 (Table 31): one more Stage III + inference + re-audit per arm, its drift "
                                "cases' severities perturbed before the weights: <up|down|random>_<percent>; [] = none")


class BaselinesParams(_Section):
    label_only: bool = Field(description="train and evaluate label-only SFT (App. K.2)")
    label_only_target: str = Field(description="the label-only completion; must contain {label} (YES / NO)")
    tox_reg: bool = Field(description="train and evaluate toxicity-regularised SFT (App. K.2.1)")
    tox_reg_lambda: NonNegFloat = Field(description="λ of L = L_CE + λ·L_tox (when tox_reg_sweep is empty)")
    tox_reg_sweep: list[NonNegFloat] = Field(description="λ values tried on the validation items (Table 20); the "
                                                         "selected one trains the test arm; [] = no sweep")
    tox_reg_normalise: Literal["max", "none"] = Field(description="toxicity normalisation of the sweep's H-mean")
    teacher_harm: bool = Field(description="K.4 (Table 22): the teacher's E.1 rationales on the test items, audited "
                                           "like M_int's (teacher and judge calls)")
    cv: bool = Field(default=False, description="A.3 (Table 7): Stage I trained on k-1 of splits.cv_folds and evaluated on the "
                                 "held-out fold, for each fold (k LoRA runs; teacher calls for pool items outside train)")
    judge_choice: bool = Field(default=False, description="App. L (Tables 25, 26): Stage II's pairs judged again by "
                               "judge_b; drift cases of both judges, their overlap and Cohen's kappa")
    label_conditioning: bool = Field(default=False, description="K.5 (Table 23): Stage I and the Stage II audit with "
                                     "the teacher's predicted labels in place of y* (teacher calls per train and "
                                     "test item, one LoRA run, judge calls where the labels differ)")


class OpenEndedParams(_Section):
    dir: str = Field(description="the open-ended set (queries.jsonl, rubric.md); relative paths are from the project root")
    dir_env: str = Field(description="environment variable that, when set, overrides dir")
    verify_checksums: bool
    n: PosInt | None = Field(description="queries evaluated, stratified by domain x relevant x premise; null = all 280")
    models: list[Literal["m0", "m_int", "m_dart"]] = Field(min_length=1, description="models that answer")
    arms: list[Literal["off", "two_pass"]] = Field(min_length=1, description="off: the neutral instruction; two_pass: "
                                                   "the E.3 label selects our open-ended policy variant")
    max_new_tokens: PosInt = Field(description="answer length cap (the other decoding settings are generation's)")
    judge_retries: NonNegInt = Field(description="follow-ups for a judge reply that breaks the schema or the rubric")
    judge_max_tokens: PosInt = Field(description="the judge's reply cap (a JSON object with a short rationale)")
    pairwise: bool = Field(description="the pairwise judge M_DART vs M0 (both orders) for the win rate")
    annotation_n: NonNegInt = Field(description="rows of the blinded human-annotation sheet")
    bootstrap_resamples: PosInt

    @model_validator(mode="after")
    def _pairwise_needs_both(self) -> OpenEndedParams:
        if self.pairwise and not {"m0", "m_dart"} <= set(self.models):
            raise _relation_error("open_ended.pairwise compares m_dart with m0: both must be in models", "pairwise",
                                  "models")
        return self


class ExternalParams(_Section):
    dir: str = Field(description="external safety suites (JSONL); relative paths are from the project root")
    dir_env: str = Field(description="environment variable that, when set, overrides dir")
    verify_checksums: bool
    sizes: dict[Literal["BOLD", "HolisticBias", "RTP", "HateCheck", "HateCheck-1000"], NonNegInt | None] = Field(
        description="prompts per suite (stratified sample); null = all staged rows, 0 = suite off")
    alpha: Alpha = Field(description="family-wise alpha for the Bonferroni-corrected subgroup tests")
    teacher_rewrite: bool = Field(description="App. O.5, Table 39: the teacher rewrites M_DART's hate-flagged HateCheck "
                                              "answers on the prompts M0 answered (one teacher call each)")
    hate_flag_threshold: Probability = Field(description="P(hate) at or above this is hate-flagged (Table 39)")


class PolicyParams(_Section):
    models: list[Literal["m0", "m_int", "m_dart"]] = Field(description="models the policy is evaluated on")
    modes: list[Literal["off", "two_pass", "always_on", "oracle", "random"]]
    harmful_keywords: list[str] = Field(description="whole-word, case-insensitive; a match flags a harmful premise")
    toxicity_threshold: Probability = Field(description="H(x) above this flags a harmful premise (paper: 0.5)")
    premise_labelled_set: Literal["HateCheck", "HateCheck-1000", "none"] = Field(
        description="external suite whose gold hateful/non-hateful labels score the harmful-premise detector")
    premise_labelled_n: PosInt | None = Field(description="cases drawn from it; null = all")
    examples: NonNegInt = Field(description="example outputs shown in the notebook")


class Table4Rule(_Section):
    acc_small_pp: NonNegFloat = Field(description="|change| below this (percentage points) is ~ (minimal change)")
    acc_large_pp: NonNegFloat = Field(description="a significant gain of at least this is a double check mark")
    tox_small_pct: NonNegFloat = Field(description="|relative change of median toxicity| below this (%) is ~")
    tox_large_pct: NonNegFloat = Field(description="a reduction of at least this (%) is a double check mark")


class StatisticsParams(_Section):
    n_resamples: PosInt = Field(description="bootstrap / permutation resamples (paper: 10,000)")
    alpha: Alpha
    bonferroni_comparisons: PosInt = Field(description="family size for Table 2's marks (paper: 15 = 5 metrics x 3 "
                                                       "models)")
    table4: Table4Rule


class DcrParams(_Section):
    """DCR's data and model (shared by its stages); docs/dcr.md."""
    model: StudentParams = Field(description="the model DCR aligns (the paper: a base LLM)")
    data_dir: str = Field(description="../shared/data/dcr; relative paths are from the project root")
    data_dir_env: str = Field(description="environment variable that, when set, overrides data_dir")
    verify_checksums: bool
    seemingly_per_type: PosInt | None = Field(description="D_seemingly: first k XSTest-safe prompts per type; "
                                                          "null = all 250")
    n_toxic: PosInt | None = Field(description="D_toxic: the n lowest ranks of d_toxic_500; null = all")
    probe_n: PosInt = Field(description="held-out probe: OR-Bench-hard vs OR-Bench-toxic prompts, n of each")


class DcrContrastiveParams(_Section):
    """DCR Stage A (contrastive refinement); every value is [choice] (DCR_notes.md B1-B4)."""
    layer: NonNegInt | None = Field(description="decoder block l (0-based) whose output enters the loss; "
                                                "null = the middle block")
    pooling: Literal["last", "mean"] = Field(description="last prompt token (emits the first answer token) or mean")
    trainable: Literal["lora", "full"] = Field(description="LoRA on blocks <= l, or the full weights of blocks <= l")
    lora_r: PosInt
    lora_alpha: Annotated[int, Field(gt=0)]
    lora_dropout: Fraction
    target_modules: Annotated[list[str], Field(min_length=1)]
    circle_m: Annotated[float, Field(gt=0, lt=1)] = Field(description="Circle loss relaxation margin m")
    circle_gamma: PosFloat = Field(description="Circle loss scale gamma")
    learning_rate: PosFloat
    epochs: PosFloat
    batch_size: Annotated[int, Field(ge=2)] = Field(description="prompts per batch (both subsets, sampled equally)")


class DcrSftParams(_Section):
    """DCR Stage B: the Safety-Tuned-LLaMAs SFT on D_general + D_safe (DCR_notes.md A3)."""
    n_general: PosInt | None = Field(description="D_general: Alpaca-5k rows with rank_seed42 < n; null = all")
    n_safe: PosInt | None = Field(description="D_safe: the n lowest ranks of d_safe_1k; null = all 1,000")
    system_prompt: str | None = Field(description="system message of every SFT example; null = none")
    training: TrainingParams
    probe_every: PosInt = Field(description="optimizer steps between two refusal-probability measurements")

    @model_validator(mode="after")
    def _probe_needs_inprocess(self) -> DcrSftParams:
        if self.training.launcher != "inprocess":
            raise _relation_error("the refusal probe measures the model inside the training process: Stage B's "
                                  "training.launcher must be 'inprocess'", "training")
        return self


DcrEvalSet = Literal["XSTest-safe", "OR-Bench-hard", "OKTest", "PHTest", "CoCoNot-contrast", "XSTest-unsafe",
                     "OR-Bench-toxic", "I-MaliciousInstructions", "I-CoNa", "I-Controversial",
                     "I-PhysicalSafetyUnsafe", "AdvBench"]


class DcrEvalParams(_Section):
    """DCR evaluation of base, SFT-only and DCR + SFT with identical (greedy) decoding."""
    sets: dict[DcrEvalSet, NonNegInt | None] = Field(description="set -> prompts (seeded stratified sample); "
                                                                  "null = all, 0 = off")
    generation: GenerationParams
    judge_n: NonNegInt | None = Field(description="answers per set and model also rated by the LLM judge (seeded "
                                                  "sample); null = all, 0 = none")
    judge_retries: NonNegInt = Field(description="follow-ups for a judge reply that names no class")
    win_rate_n: NonNegInt | None = Field(description="AlpacaEval prompts for the pairwise win rate of DCR + SFT "
                                                     "over SFT only (seeded sample); null = all 805, 0 = off")
    win_rate_max_new_tokens: PosInt = Field(description="answer length for the win rate (greedy, as above)")


class DcrNtkParams(_Section):
    """DCR's learning-dynamics measure (dcr/ntk.py); every value [choice]."""
    n: PosInt = Field(description="prompts per group (OR-Bench-hard vs OR-Bench-toxic, the held-out probe)")
    topk: PosInt = Field(description="first-token logits that enter K (the most likely next tokens)")
    last_blocks: PosInt = Field(description="theta = the weight matrices of the last n decoder blocks")
    sketch_dim: Annotated[int, Field(ge=1024)] = Field(description="count-sketch size of each Jacobian row")


class Params(_Section):
    profile: str
    student_file: str | None
    run: RunParams
    data: DataParams
    splits: SplitParams
    student: StudentParams
    teacher: LLMParams
    judge: LLMParams
    judge_b: LLMParams = Field(description="the second judge of App. L / Table 26 (baselines.judge_choice)")
    distill: DistillParams
    training: TrainingParams
    generation: GenerationParams
    harm: HarmParams
    audit: AuditParams
    repair: RepairParams
    baselines: BaselinesParams
    external: ExternalParams
    open_ended: OpenEndedParams
    policy: PolicyParams
    statistics: StatisticsParams
    dcr: DcrParams
    dcr_contrastive: DcrContrastiveParams
    dcr_sft: DcrSftParams
    dcr_eval: DcrEvalParams
    dcr_ntk: DcrNtkParams
    _origin: dict[str, str] = PrivateAttr(default_factory=dict)   # dotted key -> label of the file that set it

    def origin(self, dotted_key: str) -> str:
        """The file that set a key (or the nearest section above it), so that later checks can name it too."""
        return _origin_of(tuple(dotted_key.split(".")), self._origin)

    def __eq__(self, other: object) -> bool:
        """Equal values are equal parameters, whichever files set them (the origin is provenance, not a value)."""
        return isinstance(other, Params) and self.to_dict() == other.to_dict()

    __hash__ = None                     # its values hold lists and maps: never a dict key

    @property
    def run_name(self) -> str:
        if self.run.name:
            return self.run.name
        return (self.profile + (f"-{self.student_file}" if self.student_file else "")
                + (f"-{self.run.tag}" if self.run.tag else ""))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def fingerprint(self) -> str:
        """Stable hash of the merged parameters (used by stage stamps)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys silently; a parameter file must not (a whole section would vanish)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ParamsError(f"parameter file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _merge(base: dict, over: dict, origin: dict, src: str, prefix: str = "") -> None:
    """Deep-merge ``over`` into ``base`` in place, remembering which file set each key."""
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        if any(w in str(key).lower() for w in SECRET_WORDS) and not str(key).endswith("_env"):
            raise ParamsError(
                f"{src}: key '{dotted}' looks like a secret. Secrets are never parameters: put the value in an "
                f"environment variable and name that variable in a '*_env' key (e.g. api_key_env: DEEPSEEK_API_KEY)."
            )
        if isinstance(value, dict) and value and isinstance(base.get(key), dict):  # {} replaces (clears) a map
            _merge(base[key], value, origin, src, dotted + ".")
        else:
            base[key] = copy.deepcopy(value)
            for stale in [k for k in origin if k.startswith(dotted + ".")]:   # replaced wholesale: no child survives
                del origin[stale]
            origin[dotted] = src


def _origin_of(loc: tuple, origin: dict) -> str:
    keys = [str(p) for p in loc]
    while keys:
        dotted = ".".join(keys)
        if dotted in origin:
            return origin[dotted]
        keys.pop()
    return BASE_LABEL


def _model_for(loc: tuple) -> type[BaseModel] | None:
    """The schema section at a dotted location (to suggest the right spelling of a key)."""
    model: Any = Params
    for part in loc:
        field = getattr(model, "model_fields", {}).get(str(part))
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _explain(err: ValidationError, origin: dict) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        dotted = ".".join(str(p) for p in loc)
        src = _origin_of(loc, origin)
        if e["type"] == "extra_forbidden":
            parent = _model_for(loc[:-1]) or Params
            known = list(parent.model_fields)
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else f" Known keys here: {', '.join(known)}."
            lines.append(f"- unknown parameter '{dotted}' (set in {src}).{hint}")
        elif e["type"] == "missing":
            lines.append(f"- missing parameter '{dotted}': add it to params/base.yaml or to {src}")
        elif e["type"] == "param_relation":
            named = " and ".join(f"'{'.'.join(map(str, loc + (k,)))}' (set in {_origin_of(loc + (k,), origin)})"
                                 for k in e["ctx"]["keys"])
            lines.append(f"- parameters {named}: {e['msg']}")
        else:
            got = repr(e.get("input"))[:80]
            lines.append(f"- parameter '{dotted}' (set in {src}): {e['msg']}; got {got}")
    return "invalid parameters:\n" + "\n".join(lines)


def _file_label(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def load(profile: str = "cpu", student: str | None = None, extra_files: list[str | Path] | None = None,
         overrides: dict | None = None, params_dir: Path | None = None) -> Params:
    """Merge base + profile + student + extra files (+ an in-memory override dict) and validate."""
    pdir = Path(params_dir) if params_dir else PARAMS_DIR
    merged: dict = {}
    origin: dict = {}
    files = [pdir / "base.yaml", pdir / f"{profile}.yaml"]
    if not files[1].is_file():
        have = sorted(p.stem for p in pdir.glob("*.yaml") if p.stem != "base")
        raise ParamsError(f"unknown profile '{profile}': no {files[1]}. Profiles: {', '.join(have)}")
    if student:
        sfile = pdir / "students" / f"{student}.yaml"
        if not sfile.is_file():
            have = sorted(p.stem for p in (pdir / "students").glob("*.yaml"))
            raise ParamsError(f"unknown student '{student}': no {sfile}. Students: {', '.join(have)}")
        files.append(sfile)
    files += [Path(f) for f in (extra_files or [])]
    for f in files:
        _merge(merged, _read_yaml(f), origin, _file_label(f))
    merged["profile"] = profile
    merged["student_file"] = student or None
    if overrides:
        _merge(merged, overrides, origin, "overrides")
    return validate(merged, origin)


def validate(data: dict, origin: dict | None = None) -> Params:
    """Validate a merged dict (also used on the dict papermill injects into a notebook)."""
    try:
        params = Params.model_validate(data)
    except ValidationError as e:
        raise ParamsError(_explain(e, origin or {})) from None
    params._origin = dict(origin or {})
    return params


def resolve_env(var_name: str | None, purpose: str) -> str:
    """Read a secret from the environment variable a parameter names; clear error if it is unset."""
    if not var_name:
        raise ParamsError(f"{purpose}: no environment variable is named for its key (set '*api_key_env')")
    value = os.environ.get(var_name)
    if not value:
        raise ParamsError(f"{purpose}: environment variable {var_name} is not set. Export it before running "
                          f"(it is read from the environment only and never stored).")
    return value
