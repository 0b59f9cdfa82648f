"""gunicorn serving the Flask app: one sync worker process, access log off.

The sync worker handles one connection at a time and closes it after each
response (it does not do keep-alive), which is how gunicorn's default runs.
``KEEP_ALIVE_TIMEOUT`` is ignored: there is no keep-alive to time out.
"""

from __future__ import annotations

from typing import Any

import settings
from flask_app import app
from gunicorn.app.base import BaseApplication


class FlaskApplication(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return app


def main() -> None:
    FlaskApplication(
        {
            "bind": f"{settings.HOST}:{settings.port()}",
            "workers": 1,
            "worker_class": "sync",
            "accesslog": None,
            "loglevel": "warning",
            "backlog": 2048,
        }
    ).run()


if __name__ == "__main__":
    main()
