"""Settings: defaults, YAML, env overrides (env wins), and clear ConfigErrors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from streamlearn.cli import main
from streamlearn.config import Settings, load_settings
from streamlearn.errors import ConfigError

DEFAULT_YAML = Path(__file__).resolve().parents[1] / "config" / "default.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_match_the_contract() -> None:
    s = load_settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert (s.kafka.samples_topic, s.kafka.embeddings_topic, s.kafka.dead_letter_topic) == (
        "streamlearn.samples", "streamlearn.embeddings", "streamlearn.dead-letter")
    assert s.kafka.group_id == "streamlearn"
    assert (s.api.host, s.api.port, s.api.admin_token, s.api.enabled) == ("127.0.0.1", 8080, None, True)
    assert s.checkpoint.dir == Path("./checkpoints")
    assert s.learner.seed == 0 and s.learner.n_features is None
    assert s.log_level == "INFO"
    assert s.kafka.models_topic == "streamlearn.models" and s.fusion.every_seconds == 0  # fusion off by default


def test_fusion_is_set_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMLEARN_FUSION__EVERY_SECONDS", "2.5")
    monkeypatch.setenv("STREAMLEARN_FUSION__REPLICA_ID", "pod-7")
    monkeypatch.setenv("STREAMLEARN_KAFKA__MODELS_TOPIC", "team.models")
    s = load_settings()
    assert (s.fusion.every_seconds, s.fusion.replica_id, s.kafka.models_topic) == (2.5, "pod-7", "team.models")


def test_default_yaml_documents_every_key_with_the_default_value() -> None:
    data = yaml.safe_load(DEFAULT_YAML.read_text())
    data["checkpoint"]["dir"] = str(Path(data["checkpoint"]["dir"]))  # "./checkpoints" is Path("checkpoints")
    defaults = Settings().model_dump(mode="json")
    assert data == defaults  # same keys, same values: the file documents, it does not change
    assert load_settings(DEFAULT_YAML) == Settings()


def test_yaml_overrides_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "kafka:\n  group_id: g2\nlearner:\n  lr: 0.01\n  n_features: 12\n"))
    assert (s.kafka.group_id, s.learner.lr, s.learner.n_features) == ("g2", 0.01, 12)
    assert s.kafka.samples_topic == "streamlearn.samples"  # untouched keys keep their defaults


def test_env_wins_over_yaml_and_merges_per_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "api:\n  port: 9000\n  host: 0.0.0.0\nlearner:\n  seed: 3\n")
    monkeypatch.setenv("STREAMLEARN_API__PORT", "9100")
    monkeypatch.setenv("STREAMLEARN_LEARNER__SEED", "42")
    monkeypatch.setenv("STREAMLEARN_CHECKPOINT__DIR", "/tmp/ck")
    monkeypatch.setenv("STREAMLEARN_LOG_LEVEL", "debug")
    s = load_settings(path)
    assert (s.api.port, s.api.host) == (9100, "0.0.0.0")  # env for port, YAML for host
    assert s.learner.seed == 42
    assert s.checkpoint.dir == Path("/tmp/ck")
    assert s.log_level == "DEBUG"


def test_secrets_are_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMLEARN_API__ADMIN_TOKEN", "hunter2")
    monkeypatch.setenv("STREAMLEARN_KAFKA__SASL_PASSWORD", "pa55")
    s = load_settings()
    assert isinstance(s.api.admin_token, SecretStr)
    assert s.api.admin_token.get_secret_value() == "hunter2"
    assert s.kafka.sasl_password is not None and s.kafka.sasl_password.get_secret_value() == "pa55"
    shown = repr(s) + str(s) + str(s.model_dump())
    assert "hunter2" not in shown and "pa55" not in shown


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValidationError):
        s.learner.lr = 0.5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("api:\n  port: 0\n", "api.port"),
        ("api:\n  port: 70000\n", "api.port"),
        ("api:\n  port: http\n", "api.port"),
        ("learner:\n  lr: 0\n", "learner.lr"),
        ("learner:\n  lr: .nan\n", "learner.lr"),
        ("learner:\n  batch_size: -1\n", "learner.batch_size"),
        ("learner:\n  seed: true\n", "learner.seed"),
        ("learner:\n  drift_delta: 1.5\n", "learner.drift_delta"),
        ("learner:\n  n_features: 0\n", "learner.n_features"),
        ("checkpoint:\n  every_seconds: 0\n", "checkpoint.every_seconds"),
        ("kafka:\n  security_protocol: TLS\n", "kafka.security_protocol"),
        ("kafka:\n  samples_topic: ''\n", "kafka.samples_topic"),
        ("kafka:\n  bootstrap_server: x:1\n", "kafka.bootstrap_server"),  # a typo is an error, not ignored
        ("log_level: LOUD\n", "log_level"),
        ("learner: 5\n", "learner"),
    ],
)
def test_invalid_yaml_values_name_the_field(tmp_path: Path, yaml_text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, yaml_text))
    assert info.value.field == field
    assert info.value.reason


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("STREAMLEARN_LEARNER__LR", "abc", "learner.lr"),
        ("STREAMLEARN_API__PORT", "99999", "api.port"),
        ("STREAMLEARN_KAFKA__PARTITIONS", "0", "kafka.partitions"),
        ("STREAMLEARN_API__ADMIN_TOKEN", "", "api.admin_token"),
        # No client could send these in its Authorization header: admin would be silently unusable.
        ("STREAMLEARN_API__ADMIN_TOKEN", "   ", "api.admin_token"),
        ("STREAMLEARN_API__ADMIN_TOKEN", "caf\u00e9-token", "api.admin_token"),
        ("STREAMLEARN_API__ADMIN_TOKEN", "abc\ndef", "api.admin_token"),
        # Each of these used to pass validation and fail later with exit 1 and a library's message.
        ("STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS", ",", "kafka.bootstrap_servers"),
        ("STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS", "broker:99999", "kafka.bootstrap_servers"),
        ("STREAMLEARN_KAFKA__SAMPLES_TOPIC", "bad topic!", "kafka.samples_topic"),
        ("STREAMLEARN_KAFKA__DEAD_LETTER_TOPIC", "..", "kafka.dead_letter_topic"),
        ("STREAMLEARN_API__HOST", "256.1.1.1", "api.host"),
        ("STREAMLEARN_KAFKA__POLL_TIMEOUT_MS", "0", "kafka.poll_timeout_ms"),  # an idle loop would spin
        ("STREAMLEARN_LEARNER__META_CALM_LOSS", "-0.1", "learner.meta_calm_loss"),
        ("STREAMLEARN_LEARNER__META_MAX_EVERY", "0", "learner.meta_max_every"),
        ("STREAMLEARN_LEARNER__META_MIN_EVERY", "0", "learner.meta_min_every"),
        # The daemon read its own dead letters back, each wrapping the last, until the disk was full.
        ("STREAMLEARN_KAFKA__DEAD_LETTER_TOPIC", "streamlearn.samples", "kafka.dead_letter_topic"),
        ("STREAMLEARN_KAFKA__EMBEDDINGS_TOPIC", "streamlearn.samples", "kafka.embeddings_topic"),
        ("STREAMLEARN_KAFKA__MODELS_TOPIC", "streamlearn.samples", "kafka.models_topic"),
        ("STREAMLEARN_KAFKA__MODELS_TOPIC", "streamlearn.embeddings", "kafka.models_topic"),
        ("STREAMLEARN_FUSION__EVERY_SECONDS", "-1", "fusion.every_seconds"),
        ("STREAMLEARN_FUSION__MARGIN", "2", "fusion.margin"),
        ("STREAMLEARN_FUSION__MAX_AGE_SECONDS", "0", "fusion.max_age_seconds"),
        ("STREAMLEARN_FUSION__REPLICA_ID", "", "fusion.replica_id"),
        # These passed validation and failed later with exit 1: Kafka's 32-bit sizes, allocations, the client.
        ("STREAMLEARN_KAFKA__MAX_MESSAGE_BYTES", "3000000000", "kafka.max_message_bytes"),
        ("STREAMLEARN_LEARNER__MEMORY_PER_CLASS", "1000000000", "learner.memory_per_class"),
        ("STREAMLEARN_LEARNER__PROTOTYPES_PER_CLASS", "1000000000", "learner.prototypes_per_class"),
        ("STREAMLEARN_KAFKA__SASL_MECHANISM", "bogus", "kafka.sasl_mechanism"),
    ],
)
def test_invalid_env_overrides_name_the_field(monkeypatch: pytest.MonkeyPatch, name: str, value: str,
                                              field: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == field


def test_a_reason_from_our_own_validators_reads_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMLEARN_API__ADMIN_TOKEN", "")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.reason == "must not be empty or blank (leave it unset to turn admin endpoints off)"  # no "Value error, "


@pytest.mark.parametrize("servers", ["127.0.0.1:9092", "a.example:9092,b.example:9093", "kafka", "[::1]:9092",
                                     "broker-0.kafka.svc.cluster.local:9092", "myproj_kafka_1:9092"])
def test_usual_broker_lists_are_accepted(monkeypatch: pytest.MonkeyPatch, servers: str) -> None:
    monkeypatch.setenv("STREAMLEARN_KAFKA__BOOTSTRAP_SERVERS", servers)
    assert load_settings().kafka.bootstrap_servers == servers


def test_a_whole_section_in_env_must_be_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMLEARN_LEARNER", "{not json")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.field == "learner"


@pytest.mark.parametrize(
    ("text", "reason_part"),
    [("learner: [unclosed\n", "not valid YAML"), ("- 1\n- 2\n", "must be a mapping"),
     # YAML reads these keys as a number and None: Settings(**data) raised TypeError, and the CLI exited 1.
     ("1: 2\n", "top-level key 1 that is not a section name"),
     ("null: 1\n", "top-level key None that is not a section name")],
)
def test_bad_files_are_config_errors(tmp_path: Path, text: str, reason_part: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert reason_part in info.value.reason and str(path) in info.value.field


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "# only a comment\n")) == Settings()


def test_error_messages_do_not_echo_secrets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "api:\n  admin_token: [s3cr3t-value]\n"))
    assert info.value.field == "api.admin_token"
    assert "s3cr3t-value" not in str(info.value)


def test_cli_bad_config_file_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"features": [1]}\n')
    code = main(["replay", str(data), "--config", str(write(tmp_path, "learner:\n  lr: -1\n"))])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "learner.lr" in err and "greater than 0" in err


def test_cli_bad_env_exits_2_naming_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"features": [1]}\n')
    monkeypatch.setenv("STREAMLEARN_LEARNER__LR", "abc")
    assert main(["replay", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "learner.lr" in err


def test_cli_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--config", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.yaml" in err and "does not exist" in err


def test_an_admin_token_read_from_a_file_loses_its_trailing_newline(monkeypatch):
    # kubectl create secret --from-file keeps the file's last newline; a header never carries it.
    monkeypatch.setenv("STREAMLEARN_API__ADMIN_TOKEN", "s3cret-token\n")
    assert load_settings(None).api.admin_token.get_secret_value() == "s3cret-token"
