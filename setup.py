from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="flask_athena",
    version="0.1.0.dev0",
    description="Nevow Athena's live elements for Flask, over SSE and JSON POSTs",
    long_description=Path(__file__).with_name("README.rst").read_text(encoding="utf-8"),
    long_description_content_type="text/x-rst",
    license="MIT",
    packages=find_packages(include=["flask_athena", "flask_athena.*"]),
    package_data={
        "flask_athena": [
            "py.typed",
            "static/*.js",
            "static/*.d.ts",
            "static/*.css",
            "inspector/static/*",
            "inspector/templates/athena_inspector/*",
        ]
    },
    include_package_data=True,
    # What CI runs (Debian's 3.11, tests/run.sh and noxfile.py); older
    # Pythons are not tested, so not claimed.
    python_requires=">=3.11",
    install_requires=[
        "flask>=2.3",  # the framework we extend
        "gevent>=23.9",  # one greenlet per open event stream, cooperative waits
        "blinker>=1.6",  # signals (Flask's own signal library)
    ],
    extras_require={
        "redis": ["redis>=5"],
        # What README's deployment runs: gunicorn's gevent worker, plus the
        # "packaging" module that worker imports without declaring it.
        "gunicorn": ["gunicorn>=27", "packaging"],  # 27: the version CI runs
        # Sphinx builds docs/ (tests/run.sh builds it with -W).
        "docs": ["sphinx>=7"],
        # ATHENA_METRICS: the Prometheus client the metrics are exported with
        "metrics": ["prometheus_client>=0.17"],
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.2",
            "gunicorn>=27",  # --no-control-socket
            "requests>=2.31",
            "hypothesis>=6.100",
            "playwright>=1.44",
            "selenium>=4.20",  # WebKit in the browser suite (WebKitGTK's WebDriver)
        ],
        "dev": ["mypy>=1.10", "ruff>=0.5", "nox>=2024.3"],  # nox: the Flask version matrix
        "bench": [
            "gunicorn>=27",  # every target is served by gunicorn's gevent worker
            "packaging",  # gunicorn's gevent worker imports it without declaring it
            "redis>=5",  # the Redis targets
            "flask-socketio>=5.3",
            "gevent-websocket>=0.10",
            "matplotlib>=3.8",
            "aiohttp>=3.9",
            "uvloop>=0.19",  # keeps the load client off the critical path
            "py-spy>=0.3",  # --profile: records the server worker
        ],
    },
    classifiers=[
        "Framework :: Flask",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.11",
        "License :: OSI Approved :: MIT License",
    ],
)
