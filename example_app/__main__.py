"""``python -m example_app [--port N]``: serve the example app on 127.0.0.1 with gevent."""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

from . import create_app  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000)
    options = parser.parse_args()
    app = create_app()
    server = WSGIServer((options.host, options.port), app, log=None)
    print(f"flask_athena example app: http://{options.host}:{options.port}/  (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
