"""Settings for every part of streamlearn: one frozen model, loaded from YAML and overridden by env vars.

Precedence, highest first: environment variables (``STREAMLEARN_…``, nested
with ``__``, e.g. ``STREAMLEARN_LEARNER__LR=0.01``), then the YAML file, then
the defaults below (documented in ``config/default.yaml``). Secrets are
``SecretStr`` and render as ``**********``.

>>> s = load_settings()
>>> s.kafka.bootstrap_servers, s.api.port, s.learner.batch_size
('127.0.0.1:9092', 8080, 256)
>>> s.api.admin_token is None
True
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from streamlearn.errors import ConfigError
from streamlearn.schema import MAX_FEATURES

logger = logging.getLogger(__name__)

__all__ = [
    "KafkaSettings",
    "ApiSettings",
    "CheckpointSettings",
    "LearnerSettings",
    "FusionSettings",
    "Settings",
    "load_settings",
]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _reject_bool(value: Any) -> Any:
    # pydantic's lax mode would turn `true` into 1; a boolean where a number is
    # expected is almost always a mistake in a config file.
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


_NoBool = BeforeValidator(_reject_bool)
PositiveInt = Annotated[int, Field(ge=1), _NoBool]
NonNegativeInt = Annotated[int, Field(ge=0), _NoBool]
Port = Annotated[int, Field(ge=1, le=65535), _NoBool]
NonEmptyStr = Annotated[str, Field(min_length=1)]


# Kafka's rule for topic names: 1-249 of these characters, and not "." or "..".
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
# DNS labels; underscores too, as Docker Compose names its containers (project_kafka_1) and resolves them.
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def _check_topic(value: str) -> str:
    if not _TOPIC.fullmatch(value) or value in (".", ".."):
        raise ValueError("a Kafka topic name is 1-249 letters, digits, '.', '_' or '-' (not '.' or '..')")
    return value


def _check_host(value: str) -> str:
    """An IP address or a DNS name (what a socket can be bound to or connected to)."""
    import ipaddress

    bare = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        ipaddress.ip_address(bare)
        return value
    except ValueError:
        pass
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"{value!r} is neither an IP address nor a host name")
    return value


def _check_bootstrap(value: str) -> str:
    """A comma-separated list of host:port (the port may be left out: Kafka's 9092)."""
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            raise ValueError(f"{value!r} has an empty broker address (expected host:port[,host:port...])")
        host, sep, port = entry.rpartition(":")
        if not sep or "]" in port:  # no port (or an IPv6 address without one)
            host, port = entry, "9092"
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
        try:
            _check_host(host)
        except ValueError as exc:
            raise ValueError(f"{entry!r}: {exc}") from None
    return value


TopicName = Annotated[str, BeforeValidator(_check_topic)]
Host = Annotated[str, BeforeValidator(_check_host)]


class _Section(BaseModel):
    """Base of every settings section: immutable, and unknown keys are errors (catches typos)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# Kafka's fetch and request sizes are 32-bit; the consumer asks for a record's size plus some headroom.
MAX_MESSAGE_BYTES = 2**30


class KafkaSettings(_Section):
    """Where the broker is and which topics the service reads and writes."""

    bootstrap_servers: Annotated[str, BeforeValidator(_check_bootstrap)] = "127.0.0.1:9092"
    samples_topic: TopicName = "streamlearn.samples"
    embeddings_topic: TopicName = "streamlearn.embeddings"
    dead_letter_topic: TopicName = "streamlearn.dead-letter"
    models_topic: TopicName = "streamlearn.models"  # replicas share their encoders here (see FusionSettings)
    group_id: NonEmptyStr = "streamlearn"
    partitions: PositiveInt = 1
    replication_factor: PositiveInt = 1
    poll_max_records: PositiveInt = 500
    poll_timeout_ms: PositiveInt = 200  # 0 would make an idle daemon spin a whole core
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    # The mechanisms a user name and password serve (GSSAPI and OAUTHBEARER need settings this file does not have).
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: NonEmptyStr | None = None
    sasl_password: SecretStr | None = None
    max_message_bytes: Annotated[int, Field(ge=1, le=MAX_MESSAGE_BYTES), _NoBool] = 1_000_000

    @field_validator("embeddings_topic", "dead_letter_topic", "models_topic")
    @classmethod
    def _not_the_samples_topic(cls, value: str, info: ValidationInfo) -> str:
        # The daemon would read its own output back as samples: a dead letter of a dead letter, each
        # wrapping the last one, until the disk is full.
        if value == info.data.get("samples_topic"):
            raise ValueError("must differ from samples_topic: the daemon would read its own output back")
        return value

    @field_validator("models_topic")
    @classmethod
    def _models_apart(cls, value: str, info: ValidationInfo) -> str:
        # Models and embeddings (or dead letters) in one topic: each reader would trip over the other's messages.
        for other in ("embeddings_topic", "dead_letter_topic"):
            if value == info.data.get(other):
                raise ValueError(f"must differ from {other}: model messages would be mixed with its records")
        return value


class ApiSettings(_Section):
    """The HTTP API (and /metrics) endpoint; admin endpoints are off unless a token is set."""

    host: Host = "127.0.0.1"
    port: Port = 8080
    admin_token: SecretStr | None = None
    enabled: bool = True

    @field_validator("admin_token")
    @classmethod
    def _token_sendable(cls, value: SecretStr | None) -> SecretStr | None:
        # A client sends it in an HTTP header: surrounding whitespace (a Secret made from a file ending
        # in a newline) is dropped, and what a header cannot carry is refused, never silently unusable.
        if value is None:
            return None
        token = value.get_secret_value().strip()
        if not token:
            raise ValueError("must not be empty or blank (leave it unset to turn admin endpoints off)")
        if not all(" " <= c <= "~" for c in token):
            raise ValueError("must be printable ASCII (an Authorization header cannot carry control "
                             "characters or non-ASCII letters reliably)")
        return SecretStr(token)


class CheckpointSettings(_Section):
    """Where and how often the learner is checkpointed, and how many checkpoints are kept."""

    dir: Path = Path("./checkpoints")
    every_samples: PositiveInt = 5000
    every_seconds: float = Field(30.0, gt=0, allow_inf_nan=False)
    keep: PositiveInt = 3


MAX_SEED = 2**64 - 1  # torch's generator takes a 64-bit seed
MAX_WIDTH = 8192
# A class's memory is allocated whole when the class first appears; far above any useful size.
MAX_MEMORY_PER_CLASS = 100_000
MAX_PROTOTYPES_PER_CLASS = 1000


class LearnerSettings(_Section):
    """Hyperparameters of the online meta-learner (see streamlearn.learner.Learner)."""

    seed: Annotated[int, Field(ge=0, le=MAX_SEED), _NoBool] = 0
    n_features: Annotated[int, Field(ge=1, le=MAX_FEATURES), _NoBool] | None = None
    embedding_dim: Annotated[int, Field(ge=1, le=MAX_WIDTH), _NoBool] = 64
    hidden_dim: Annotated[int, Field(ge=1, le=MAX_WIDTH), _NoBool] = 128
    lr: float = Field(0.001, gt=0, allow_inf_nan=False)
    meta_every: PositiveInt = 16
    meta_max_every: PositiveInt = 64
    meta_min_every: PositiveInt = 4
    meta_calm_loss: float = Field(0.15, ge=0, allow_inf_nan=False)
    episode_ways: PositiveInt = 10
    episode_shots: PositiveInt = 8
    episode_queries: PositiveInt = 8
    memory_per_class: Annotated[int, Field(ge=1, le=MAX_MEMORY_PER_CLASS), _NoBool] = 200
    max_classes: PositiveInt = 1000
    prototypes_per_class: Annotated[int, Field(ge=1, le=MAX_PROTOTYPES_PER_CLASS), _NoBool] = 1
    neighbours: NonNegativeInt = 5
    linear_lr: float = Field(0.01, ge=0, allow_inf_nan=False)
    distill_weight: float = Field(1.0, ge=0, allow_inf_nan=False)
    anchor_weight: float = Field(0.01, ge=0, allow_inf_nan=False)
    drift_delta: float = Field(0.002, gt=0, lt=1, allow_inf_nan=False)
    concept_library_size: NonNegativeInt = 8
    batch_size: PositiveInt = 256
    # A model to start from instead of a fresh one (see streamlearn.initial_model); a checkpoint wins.
    initial_model: Path | None = None


class FusionSettings(_Section):
    """Replicas in one consumer group share their encoders through ``kafka.models_topic`` and average them.

    Off while ``every_seconds`` is 0. Every ``every_seconds`` a replica averages its encoder
    with the newest one of each peer that it has not used yet (kept only if the average does
    at least ``margin`` as well on its own latest labeled samples), then publishes its own.
    """

    every_seconds: float = Field(0.0, ge=0, allow_inf_nan=False)
    replica_id: NonEmptyStr | None = None  # unset: host name and process id
    max_age_seconds: float = Field(600.0, gt=0, allow_inf_nan=False)  # older peer models are not used
    margin: float = Field(0.02, ge=0, le=1, allow_inf_nan=False)


class Settings(BaseSettings):
    """All of streamlearn's configuration; build it with load_settings()."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMLEARN_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    api: ApiSettings = ApiSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()
    learner: LearnerSettings = LearnerSettings()
    fusion: FusionSettings = FusionSettings()
    log_level: str = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _known_level(cls, value: Any) -> str:
        level = str(value).upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
        return level

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, so env vars win over the YAML values load_settings passes as arguments."""
        return (env_settings, init_settings)


def _read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML config file into a mapping, or raise ConfigError naming the file."""
    field = f"config file {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(field, "does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(field, f"cannot be read ({exc.__class__.__name__}: {exc})") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise ConfigError(field, f"is not valid YAML{at}: {problem}") from exc
    if data is None:  # an empty file (or only comments) means "all defaults"
        return {}
    if not isinstance(data, dict):
        raise ConfigError(field, f"must be a mapping of settings, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):  # YAML reads `1:` or `null:` as a number or None, not a setting's name
            raise ConfigError(field, f"has a top-level key {key!r} that is not a section name")
    return data


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    """Turn one pydantic error into (dotted field, reason)."""
    field = ".".join(str(part) for part in error.get("loc", ())) or "settings"
    reason = error.get("msg", "invalid value")
    if error.get("type") == "value_error":  # our own validators' message, without pydantic's "Value error, "
        reason = str(error.get("ctx", {}).get("error", reason))
    if error.get("type") == "extra_forbidden":
        reason = "unknown setting"
    elif "input" in error and not isinstance(error["input"], dict) and not _is_secret(field):
        reason = f"{reason} (got {error['input']!r})"
    return field, reason


def _is_secret(field: str) -> bool:
    """True for fields whose value must never appear in a message (passwords, tokens)."""
    return any(word in field for word in ("password", "token", "secret"))


def load_settings(path: Path | None = None) -> Settings:
    """Load settings from an optional YAML file plus STREAMLEARN_* env vars; raise ConfigError if invalid.

    >>> load_settings(None).learner.lr
    0.001
    """
    data = _read_yaml(Path(path)) if path is not None else {}
    _warn_on_stray_variables(os.environ)
    try:
        return Settings(**data)
    except ValidationError as exc:
        errors = exc.errors()
        field, reason = _describe(errors[0])
        if len(errors) > 1:
            reason = f"{reason} (and {len(errors) - 1} more invalid setting(s))"
        raise ConfigError(field, reason) from exc
    except SettingsError as exc:
        # Raised when an env var holding a whole section (e.g. STREAMLEARN_KAFKA) is not valid JSON.
        match = re.search(r'field "([^"]+)"', str(exc))
        field = match.group(1) if match else "environment"
        raise ConfigError(field, f"cannot parse the environment value ({exc})") from exc


# Variables with the prefix that the project's own scripts use, not settings.
_NOT_SETTINGS = ("STREAMLEARN_CACHE", "STREAMLEARN_TEST_")


def _warn_on_stray_variables(environ: Mapping[str, str]) -> list[str]:
    """Warn about (and return) ``STREAMLEARN_*`` variables that name no setting, e.g. a single underscore typo.

    Unknown keys inside a section are already errors; a variable whose section does not exist
    would otherwise be ignored without a word (and the setting silently keep its default).

    >>> _warn_on_stray_variables({"STREAMLEARN_KAFKA_BOOTSTRAP_SERVERS": "x", "STREAMLEARN_LOG_LEVEL": "INFO",
    ...                           "STREAMLEARN_API__PORT": "1", "STREAMLEARN_CACHE": "/c", "HOME": "/root"})
    ['STREAMLEARN_KAFKA_BOOTSTRAP_SERVERS']
    """
    stray = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith("STREAMLEARN_") or upper.startswith(_NOT_SETTINGS):
            continue
        if upper[len("STREAMLEARN_"):].split("__", 1)[0].lower() not in Settings.model_fields:
            stray.append(name)
            logger.warning("environment variable ignored: it names no setting",
                           extra={"variable": name, "expected": "STREAMLEARN_<SECTION>__<KEY>, two underscores, "
                                                               "e.g. STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS"})
    return stray
