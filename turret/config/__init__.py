"""The configuration: YAML read strictly, checked section by section into `turret.model` values.

Pure but for `read_config`, which reads the file. Every problem is reported with its dotted key
path and line, all at once, and Turret refuses to start on any (`ConfigError`).
"""

from turret.config.reader import load_config, read_config

__all__ = ["load_config", "read_config"]
