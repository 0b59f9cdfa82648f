"""granian serving the scenario endpoints (asgi_scenarios.py), set up as granian_hello.py."""

from __future__ import annotations

from granian_hello import main

if __name__ == "__main__":
    main("asgi_scenarios:app")
