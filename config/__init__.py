"""Herald's configuration: one YAML file, validated at start-up into one immutable Config.

Why so strict: a daemon that sends messages to real users must not start on a
half-understood configuration. All problems are collected and reported together (fix
them in one edit, not one restart per typo), each naming the dotted key, the bad value
and what is allowed. Unknown keys are errors at every level, because a typo such as
`wokers: 64` would otherwise fall back to the default without anyone noticing.

String values may use ${VAR} and ${VAR:-default} (default when VAR is unset or empty,
as in the shell); write $${ for a literal ${. Secrets are wrapped in Secret, whose str()
and repr() never show the value, and error messages print <secret> instead of it.

Modules: model.py declares every key once, as a field of the dataclass it loads into
(start there); spec.py is the language of those declarations and values.py the value
checks they use; schema.py makes the tree of them; walk.py applies it to a file, with
interpolate.py (${VAR}) and credentials.py (secret files); rules.py the checks across
keys and the warnings; load.py the entry points; secret.py and errors.py what the rest
of Herald catches and wraps. sample.py and reference.py write config.yaml and
docs/configuration.md from the declarations (`python -m config.generate`).
"""

from .load import config_from_dict, load_config
from .model import (
    AppConfig,
    Backoff,
    Config,
    ConfigError,
    ConsoleConfig,
    ConsoleUser,
    DispatchConfig,
    GrantsConfig,
    HttpConfig,
    JobConfig,
    LogConfig,
    MetricsConfig,
    PushConfig,
    QuotaReset,
    ReceiptsConfig,
    Retention,
    RetryConfig,
    Secret,
    SmsConfig,
    UnknownAppError,
    WebConfig,
)
from .values import duration_seconds, shown


def parse_duration(value: object, key: str) -> float:
    """Seconds for `90s`, `5m`, `1h`, `30d` or a plain number of seconds (> 0).

    Raises ConfigError with one problem naming `key` otherwise.
    """
    try:
        return duration_seconds(value)
    except ValueError as error:
        raise ConfigError([f"{key}: {shown(value)} {error}"]) from None


__all__ = [
    "AppConfig",
    "Backoff",
    "Config",
    "ConfigError",
    "ConsoleConfig",
    "ConsoleUser",
    "DispatchConfig",
    "GrantsConfig",
    "HttpConfig",
    "JobConfig",
    "LogConfig",
    "MetricsConfig",
    "PushConfig",
    "QuotaReset",
    "ReceiptsConfig",
    "Retention",
    "RetryConfig",
    "Secret",
    "SmsConfig",
    "UnknownAppError",
    "WebConfig",
    "config_from_dict",
    "load_config",
    "parse_duration",
]
