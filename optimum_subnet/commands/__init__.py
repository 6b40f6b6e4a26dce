"""``optimum-cli subnet ...``. Installed as ``optimum.commands.subnet`` (see pyproject.toml): importing a
command never imports optimum_subnet, torch or transformers; each command does so inside ``run()``."""
