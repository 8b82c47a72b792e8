"""Configuration: every error message names the file, the key path and what was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shipper.config import load_config, parse_config
from shipper.errors import ConfigError
from shipper.values import Secret

BASE = """
state_dir: /tmp/x
receivers:
  socket: {type: unix_socket, path: /tmp/x/s.sock}
exporters:
  out: {type: file}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "cfg.yaml")
    return info.value.problems


def test_embedded_default_is_valid() -> None:
    """`shipper run` without -c has a valid config: socket and spool receivers, a file exporter."""
    config = load_config(None)
    assert [s.type for s in config.receivers] == ["unix_socket", "spool"]
    assert [s.type for s in config.exporters] == ["file"]


def test_unknown_key_suggests_the_right_one() -> None:
    """A misspelt key is rejected with a did-you-mean."""
    assert problems(BASE + "shutdown_timout: 5s\n") == [
        "cfg.yaml:7:1: shutdown_timout: unknown key; did you mean 'shutdown_timeout'?"]


def test_unknown_nested_key_has_its_path() -> None:
    """The key path goes down into components."""
    text = BASE.replace("{type: file}", "{type: file, max_byts: 10}")
    assert problems(text) == ["cfg.yaml:6:21: exporters.out.max_byts: unknown key; did you mean 'max_bytes'?"]


def test_unknown_type_lists_the_known_ones() -> None:
    """An unknown component type says which exist."""
    text = BASE.replace("type: file", "type: fil")
    assert problems(text) == ["cfg.yaml:6:9: exporters.out.type: unknown exporter type 'fil'; did you mean 'file'?"]


def test_missing_type() -> None:
    """A component without a type says so."""
    text = BASE.replace("{type: file}", "{path: /tmp/x}")
    (problem,) = problems(text)
    assert problem.startswith("cfg.yaml:6:3: exporters.out.type: required key is missing; expected one of ")


def test_wrong_scalar_type() -> None:
    """A string where an integer belongs names what was expected."""
    text = BASE.replace("{type: file}", "{type: file, max_files: many}")
    assert problems(text) == ["cfg.yaml:6:21: exporters.out.max_files: expected an integer, got 'many'"]


def test_bad_duration() -> None:
    """Durations take units; a word is refused with an example."""
    assert problems(BASE + "shutdown_timeout: soon\n") == [
        "cfg.yaml:7:1: shutdown_timeout: expected a duration like 250ms, 5s, 2m or a number of seconds, got 'soon'"]


def test_bad_size() -> None:
    """Sizes take units; nonsense is refused with an example."""
    assert problems(BASE + "max_record_bytes: lots\n") == [
        "cfg.yaml:7:1: max_record_bytes: expected a size like 512KiB, 16MiB or a number of bytes, got 'lots'"]


def test_units_are_understood() -> None:
    """`250ms` and `16MiB` become seconds and bytes."""
    config = parse_config(BASE + "shutdown_timeout: 250ms\nmax_record_bytes: 2MiB\n", "cfg.yaml")
    assert config.settings.shutdown_timeout == 0.25
    assert config.settings.max_record_bytes == 2 * 1024 * 1024


def test_below_minimum() -> None:
    """Ranges are checked."""
    assert problems(BASE + "batch: {max_spans: 0}\n") == ["cfg.yaml:7:9: batch.max_spans: expected at least 1, got 0"]


def test_literal_choices() -> None:
    """An enum value outside its choices lists them."""
    assert problems(BASE + "log_level: loud\n") == [
        "cfg.yaml:7:1: log_level: expected one of debug, info, warning, error, got 'loud'"]
    assert problems(BASE + "log_level: warn\n") == [
        "cfg.yaml:7:1: log_level: expected one of debug, info, warning, error, got 'warn'; did you mean 'warning'?"]


def test_every_problem_is_collected() -> None:
    """All problems come at once, not the first one only."""
    text = BASE + "log_level: loud\nshutdown_timeout: soon\nbogus: 1\n"
    assert len(problems(text)) == 3


def test_yaml_syntax_error_has_line_and_column() -> None:
    """Broken YAML names the file, line and column."""
    (problem,) = problems("receivers: [\n")
    assert problem.startswith("cfg.yaml:2:1: invalid YAML:")


def test_env_substitution_with_default_and_types(monkeypatch: pytest.MonkeyPatch) -> None:
    """`${VAR}` fills strings and numbers; `${VAR:-default}` falls back."""
    monkeypatch.setenv("SHP_FILES", "7")
    text = BASE.replace("{type: file}", "{type: file, max_files: '${SHP_FILES}', path: '${SHP_NOPE:-/tmp/o.ndjson}'}")
    config = parse_config(text, "cfg.yaml")
    assert config.exporters[0].config.max_files == 7
    assert config.exporters[0].config.path == "/tmp/o.ndjson"


def test_unset_env_var_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reference to an unset variable without a default is reported with its key."""
    monkeypatch.delenv("SHP_UNSET", raising=False)
    text = BASE.replace("{type: file}", "{type: file, path: '${SHP_UNSET}'}")
    assert problems(text) == ["cfg.yaml:6:21: exporters.out.path: environment variable SHP_UNSET is not set "
                              "(write ${SHP_UNSET:-default} to give a default)"]


def test_no_receivers() -> None:
    """A config without receivers cannot receive anything."""
    assert problems("exporters: {out: {type: file}}\n") == [
        "cfg.yaml: receivers: at least one receiver is required"]


def test_socket_path_too_long() -> None:
    """Unix socket paths over 107 bytes are refused before bind."""
    text = BASE.replace("/tmp/x/s.sock", "/tmp/" + "x" * 120)
    assert problems(text) == ["cfg.yaml:4:31: receivers.socket.path: a Unix socket path is limited to 107 bytes, got 125"]


def test_unreadable_file_names_it(tmp_path: Path) -> None:
    """A missing config file is named in the error."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert info.value.problems == [f"{tmp_path / 'nope.yaml'}: cannot read the config file: No such file or directory"]


def test_secret_never_prints() -> None:
    """A Secret shows *** in str and repr."""
    secret = Secret("sk-live-123")
    assert "sk-live" not in f"{secret} {secret!r}"
    assert secret.reveal() == "sk-live-123"


def test_check_command_exit_codes(tmp_path: Path) -> None:
    """`shipper check` exits 0 on a good file and 1 with the problems on stderr for a bad one."""
    good = tmp_path / "good.yaml"
    good.write_text(BASE)
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "bogus: 1\n")
    ok = subprocess.run([sys.executable, "-m", "shipper", "check", "-c", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    fail = subprocess.run([sys.executable, "-m", "shipper", "check", "-c", str(bad)], capture_output=True, text=True)
    assert fail.returncode == 1
    assert f"{bad}:7:1: bogus: unknown key" in fail.stderr
    usage = subprocess.run([sys.executable, "-m", "shipper", "frobnicate"], capture_output=True, text=True)
    assert usage.returncode == 2


def test_example_config_is_valid_and_documents_every_key() -> None:
    """config.example.yaml passes `check`, and names every key of every component it shows."""
    import dataclasses

    from shipper import registry
    from shipper.settings import DeliveryConfig, Settings

    path = Path(__file__).resolve().parents[1] / "config.example.yaml"
    config = load_config(path)
    text = path.read_text()
    for f in dataclasses.fields(Settings):
        assert f"{f.name}:" in text, f"top-level key {f.name} is not documented"
    for f in dataclasses.fields(DeliveryConfig):
        assert f"{f.name}:" in text, f"exporter delivery key {f.name} is not documented"
    for section in ("receivers", "exporters"):
        for spec in getattr(config, section):
            for f in dataclasses.fields(registry.load(section, spec.type).Config):
                assert f"{f.name}:" in text, f"{section} {spec.type}: key {f.name} is not documented"


def test_readme_backend_example_is_a_valid_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The YAML the README shows for backends passes validation as written."""
    import re

    for name in ("LANGFUSE_PUBLIC_KEY", "LANGFUSE_SECRET_KEY", "BRAINTRUST_API_KEY"):
        monkeypatch.setenv(name, "x" * 12)
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (example,) = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    config = parse_config("receivers: {s: {type: unix_socket, path: /tmp/x.sock}}\n" + example, "README.md")
    assert [s.type for s in config.exporters] == ["file", "phoenix", "langfuse", "braintrust", "otlp_http"]


def test_duplicated_key_names_both_lines() -> None:
    """Two `exporters:` blocks are an error naming both lines, not a silent last-wins."""
    text = BASE + "exporters:\n  other: {type: file}\n"
    assert problems(text) == ["cfg.yaml:7:1: exporters: duplicated key; it is also written at line 5, column 1 "
                              "(YAML would keep only the last): merge the two"]
    nested = BASE.replace("{type: file}", "{type: file, path: /tmp/a, path: /tmp/b}")
    assert problems(nested) == ["cfg.yaml:6:35: exporters.out.path: duplicated key; it is also written at line 6, "
                                "column 21 (YAML would keep only the last): merge the two"]


def test_problems_in_lists_and_block_style_carry_line_and_column() -> None:
    """A key inside a processor list item, and a missing required key, point at where they are written."""
    text = BASE + "processors:\n  - type: sample\n    rat: 0.5\n  - type: nosuch\n"
    found = problems(text)
    assert found[0].startswith("cfg.yaml:9:5: processors[0].rat: unknown key"), found
    assert found[1].startswith("cfg.yaml:10:5: processors[1].type: unknown processor type 'nosuch'"), found


def test_positions_survive_env_substitution_and_anchors(monkeypatch: pytest.MonkeyPatch) -> None:
    """`${VAR}` still fills values; merge keys are not duplicates; a bad substituted value names its line."""
    monkeypatch.setenv("SHP_TIMEOUT", "never")
    text = BASE + "common: &c {max_spans: 5}\nbatch:\n  <<: *c\n  max_delay: 1s\nshutdown_timeout: ${SHP_TIMEOUT}\n"
    found = problems(text)
    assert found[0] == "cfg.yaml:7:1: common: unknown key; expected one of " + found[0].split("expected one of ")[1]
    assert found[1] == ("cfg.yaml:11:1: shutdown_timeout: expected a duration like 250ms, 5s, 2m or a number of "
                        "seconds, got 'never'")
    monkeypatch.setenv("SHP_TIMEOUT", "3s")
    config = parse_config(BASE + "batch:\n  max_spans: 5\nshutdown_timeout: ${SHP_TIMEOUT}\n", "cfg.yaml")
    assert config.settings.shutdown_timeout == 3.0


def test_http_exporters_batch_2048_spans_unless_told_and_others_512() -> None:
    """An exporter type's own batch default (HTTP exporters send 2048 spans a request); a `batch.max_spans`
    in the config wins, and the class-level default is not a key a config may set."""
    from shipper.errors import ConfigError
    from shipper.testing import build_exporter

    assert build_exporter("otlp_http", {})[1].batch.max_spans == 2048
    assert build_exporter("phoenix", {})[1].batch.max_spans == 2048
    assert build_exporter("otlp_http", {"batch": {"max_spans": 100}})[1].batch.max_spans == 100
    assert build_exporter("otlp_http", {"batch": {"max_delay": "2s"}})[1].batch.max_spans == 2048
    assert build_exporter("file", {})[1].batch.max_spans == 512
    with pytest.raises(ConfigError, match="default_batch_spans"):
        build_exporter("otlp_http", {"default_batch_spans": 5})
