"""Request and response bodies of the HTTP API; they are also what /openapi.json describes."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from molgan.config import ConditionName
from molgan.sampling_settings import SamplingMode

# Seeds are echoed to browsers, whose JSON numbers are exact only up to 2^53 - 1.
MAX_SEED = 2**53 - 1
# The sampling fields' bounds restate the rules of molgan.sampling_settings for /openapi.json; the
# generate handler checks a request through SamplingSettings, which also refuses argmax with a
# temperature or min_p. MAX_TEMPERATURE is this service's own limit on top of those rules.
MAX_TEMPERATURE = 100.0
# Longest SMILES a request may send; molecules of this generator have a few dozen characters.
MAX_SMILES_LENGTH = 500
# SMILES are printable ASCII without spaces: one byte per character in a JSON body, which is what
# lets the export schema's limits promise a body under the size limit.
SMILES_PATTERN = r"^[!-~]+$"
# The export schema's largest body: a list of SMILES written as JSON.stringify or Python's
# json.dumps write it (quotes, comma and at most one space per item), plus the rest of the object.
EXPORT_ENVELOPE_BYTES = 64
EXPORT_ITEM_OVERHEAD_BYTES = 4
# Fewer items rather than SMILES too short for a molecule of a few dozen atoms (QM9's longest
# canonical SMILES has 28 characters).
MIN_EXPORT_SMILES_LENGTH = 40
# Model names are file stems chosen by whoever runs the server; this only bounds what a request
# may send.
MAX_MODEL_NAME_LENGTH = 200

ExportFormat = Literal["csv", "sdf"]


def json_safe(value: Any) -> Any:
    """What JSON in UTF-8 can hold: NaN and infinity become text ("nan", "inf"), and a lone UTF-16
    surrogate (which a JSON string may spell as "\\ud800" but UTF-8 cannot encode) becomes the text
    of its escape, in keys as in values."""
    if isinstance(value, str):
        return _utf8_safe(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _utf8_safe(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def export_limits(max_molecules: int, max_body_bytes: int) -> tuple[int, int]:
    """(SMILES per export, characters per SMILES) such that the largest body the export schema
    allows fits under ``max_body_bytes``: as many SMILES as ``POST /v1/generate`` returns, each as
    long as the body limit leaves room for (at most ``MAX_SMILES_LENGTH``); if that would be under
    ``MIN_EXPORT_SMILES_LENGTH`` characters, fewer SMILES of that length."""
    room = max_body_bytes - EXPORT_ENVELOPE_BYTES
    length = min(MAX_SMILES_LENGTH, room // max_molecules - EXPORT_ITEM_OVERHEAD_BYTES)
    if length >= MIN_EXPORT_SMILES_LENGTH:
        return max_molecules, length
    return max(1, room // (MIN_EXPORT_SMILES_LENGTH + EXPORT_ITEM_OVERHEAD_BYTES)), MIN_EXPORT_SMILES_LENGTH



class GenerateRequestBase(BaseModel):
    # strict: "5" is not a number and 1 is not true; extra: a misspelt field is an error, not ignored.
    model_config = ConfigDict(extra="forbid", strict=True)

    n: int
    model: str | None = Field(
        None, min_length=1, max_length=MAX_MODEL_NAME_LENGTH,
        description="Name of a served model (GET /v1/models). Omitted: the server's default model.",
    )
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED,
        description="Random seed; the same seed and settings give the same molecules. "
        "Omitted: a random seed, returned in stats.seed.",
    )
    temperature: float | None = Field(
        None, gt=0, le=MAX_TEMPERATURE, allow_inf_nan=False,
        description="Gumbel-Max sampling temperature; setting it samples instead of taking the most likely "
        "graph (mode 'gumbel') unless mode says otherwise.",
    )
    min_p: float | None = Field(
        None, ge=0, lt=1, allow_inf_nan=False,
        description="Gumbel-Max skips the classes of a choice that are less likely than min_p times its "
        "most likely class (0: plain Gumbel-Max). Omitted: the checkpoint's own setting.",
    )
    mode: SamplingMode | None = Field(
        None, description="'argmax': the most likely graph for each noise vector; 'gumbel': sample it. "
        "Omitted: 'gumbel' when a temperature or min_p is given, else the checkpoint's own setting.",
    )
    valid_only: bool = Field(False, description="Keep sampling until n valid molecules (or the attempt cap).")
    unique: bool = Field(False, description="Drop repeated molecules (and invalid ones), keep sampling.")
    properties: bool = Field(False, description="Add QED, logP, SA score and molecular weight.")
    targets: dict[str, Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        None, examples=[{"logp": 1.5, "qed": 0.5}],
        description="A conditional model's targets (GET /v1/models: conditions): a value per property, "
        "within that condition's [low, high]; the properties not named are left to the model. A property "
        "the model is not conditioned on, a value out of range, or any target for an unconditional "
        "model is a 422 naming it (loc: body, targets, <property>).",
    )


def generate_request_model(max_molecules: int) -> type[GenerateRequestBase]:
    """The request body with this server's limit on ``n`` written into its schema."""

    class GenerateRequest(GenerateRequestBase):
        n: int = Field(
            min(10, max_molecules), ge=1, le=max_molecules, description="Number of molecules to return."
        )

    return GenerateRequest


class ExportRequestBase(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    smiles: list[str]
    format: ExportFormat = Field(
        description="'csv': every SMILES with its validity and, for valid ones, QED, logP, SA score and "
        "molecular weight; 'sdf': the valid molecules with 2D coordinates, named by their SMILES.",
    )


def export_request_model(max_molecules: int, max_body_bytes: int) -> type[ExportRequestBase]:
    """The export body with this server's limits on molecules and body size written into its schema."""
    max_items, max_length = export_limits(max_molecules, max_body_bytes)
    Smiles = Annotated[str, StringConstraints(min_length=1, max_length=max_length, pattern=SMILES_PATTERN)]

    class ExportRequest(ExportRequestBase):
        smiles: list[Smiles] = Field(
            min_length=1, max_length=max_items,
            description=f"The molecules to write, in order; each must parse in RDKit and have no more "
            f"heavy atoms than the server allows (GET /v1/model: limits.max_heavy_atoms). SMILES are "
            f"printable ASCII without spaces; {max_items} of {max_length} characters fit in the body "
            f"limit of {max_body_bytes} bytes (written as JSON.stringify or json.dumps write them).",
        )

    return ExportRequest


class Molecule(BaseModel):
    smiles: str | None = Field(description="Canonical SMILES; null when the graph does not sanitize.")
    valid: bool = Field(description="Sanitizes in RDKit and is one connected molecule.")
    qed: float | None = Field(None, description="With properties: QED drug-likeness; null if invalid.")
    logp: float | None = Field(None, description="With properties: Crippen logP; null if invalid.")
    sa: float | None = Field(None, description="With properties: synthetic accessibility 1 (easy)..10.")
    mol_weight: float | None = Field(None, description="With properties: molecular weight in g/mol.")


class GenerateStats(BaseModel):
    requested: int = Field(description="n of the request.")
    returned: int = Field(description="Molecules in this answer (less than requested if it fell short).")
    sampled: int = Field(description="Raw samples drawn to find them.")
    valid: int = Field(description="Valid molecules in this answer.")
    unique: int = Field(description="Distinct valid molecules in this answer.")
    fell_short: bool = Field(description="The attempt cap was reached before n molecules passed the filters.")
    seed: int = Field(description="The seed used; send it again to get the same molecules.")
    mode: SamplingMode = Field(description="How graphs were taken from the generator.")
    temperature: float | None = Field(description="Sampling temperature (null for argmax).")
    min_p: float | None = Field(description="Min-p truncation (null for argmax).")
    elapsed_ms: float = Field(description="Time the server spent on the request, queueing included.")


class ModelSummary(BaseModel):
    name: str = Field(description="The model's name on this server (its checkpoint's file name less "
                      "the suffix); what the 'model' field of a request takes.")
    config: str = Field(description="Name of the training configuration.")
    step: int | None = Field(description="Generator steps the checkpoint was trained for.")
    checkpoint: str = Field(description="File name of the checkpoint the server loaded (not its path).")


class GenerateResponse(BaseModel):
    molecules: list[Molecule]
    stats: GenerateStats
    model: ModelSummary


class Vocabulary(BaseModel):
    atoms: list[str] = Field(description="Atom labels; '*' is 'no atom'.")
    max_atoms: int = Field(description="Heavy atoms per graph, at most.")
    bonds: list[str] = Field(description="Bond labels; 'none' is 'no bond'.")


class SamplingDefaults(BaseModel):
    mode: SamplingMode
    temperature: float
    min_p: float


class Limits(BaseModel):
    max_molecules: int = Field(description="Largest n of POST /v1/generate.")
    max_body_bytes: int
    request_timeout_s: float
    max_heavy_atoms: int = Field(description="Heavy atoms a SMILES of POST /v1/export or GET /v1/depict "
                                 "may have, at most.")


class ConditionInfo(BaseModel):
    name: ConditionName = Field(description="The property, as a key of a request's targets: 'logp' (Crippen "
                                "logP), 'qed', 'sa' (synthetic accessibility) or 'mol_weight'.")
    low: float = Field(description="Lowest target the model takes: the training data's range, a bit wider.")
    high: float = Field(description="Highest target the model takes.")
    mean: float = Field(description="Mean over the training data.")
    std: float = Field(description="Standard deviation over the training data.")
    percentiles: dict[str, float] = Field(
        description="The training data's 10th, 25th, 50th, 75th and 90th percentiles, keyed '10' .. '90'."
    )
    tolerance: float = Field(description="How near an achieved value must come to its target to count as "
                             "a hit in the model's evaluation.")


class ModelInfo(ModelSummary):
    sha256: str = Field(description="SHA-256 of the checkpoint file, to tell checkpoints of one name apart.")
    objectives: list[Literal["qed", "logp", "sa"]] = Field(
        description="Properties its training reward steered towards (empty: validity and variety "
        "alone).")
    vocab: Vocabulary
    sampling: SamplingDefaults = Field(description="Used for what a request does not set.")
    z_dim: int = Field(description="Size of the generator's noise vector.")
    conditions: list[ConditionInfo] = Field(
        description="Properties POST /v1/generate takes targets for, in the model's order (empty: an "
        "unconditional model, which takes none)."
    )
    metrics: dict[str, Any] = Field(
        description="Evaluation figures: those of the <name>.eval.json file beside the checkpoint if "
        "there is one, else those saved in the checkpoint."
    )
    versions: dict[str, str] = Field(description="Package versions the checkpoint was written with.")
    limits: Limits
    default: bool = Field(description="Requests that name no model are answered by this one.")


class ModelList(BaseModel):
    default: str = Field(description="Name of the model of requests that name none.")
    models: list[ModelInfo] = Field(description="Every model this server serves, in its order.")


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "not ready"]
    model: str | None = Field(None, description="The default model.")
    models: list[str] | None = Field(None, description="Every model served.")


class ErrorMessage(BaseModel):
    detail: str
