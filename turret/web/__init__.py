"""The web layer: thin aiohttp adapters of the pipeline (`create_app` in `turret.web.app`)."""
