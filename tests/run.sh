#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh Debian machine, then run it.
#   bash tests/run.sh            # the whole suite (what CI runs)
#   bash tests/run.sh -k chat    # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
# The browser suite's other engines: Firefox over WebDriver BiDi (a Node
# driver), WebKitGTK's MiniBrowser under Xvfb (tests/browser/engines.py).
command -v firefox-esr >/dev/null 2>&1 || need+=(firefox-esr)
command -v WebKitWebDriver >/dev/null 2>&1 || need+=(webkit2gtk-driver)
command -v Xvfb >/dev/null 2>&1 || need+=(xvfb)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)  # athena.js: node --test, tsc
# deploy/ runs behind Debian's nginx (tests/integration/test_nginx.py), certificates by openssl
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing Debian packages: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# puppeteer-core, pinned in tests/browser/bidi/package-lock.json; it never
# downloads a browser (Firefox is Debian's).
bidi=tests/browser/bidi
pinned=$(node -p "require('./$bidi/package.json').dependencies['puppeteer-core']")
installed=$(node -p "try { require('./$bidi/node_modules/puppeteer-core/package.json').version } catch { '' }")
if [ "$pinned" != "$installed" ]; then
  echo "== installing puppeteer-core $pinned into $bidi/node_modules"
  (cd "$bidi" && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
echo "== installing Python packages into .venv"
.venv/bin/pip install -q -e ".[test,redis,dev,bench,metrics,docs]"

echo "== ruff, mypy --strict"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

echo "== athena.js: tsc --checkJs, athena.d.ts drift, node --test"
bash tests/js/check.sh

echo "== Sphinx docs (-W: a warning fails)"
.venv/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html

if [ $# -eq 0 ]; then
  # The whole run (CI): the unit tests against the oldest Flask supported too
  # (noxfile.py; the latest is .venv's own). Skipped when arguments pick tests.
  # The hypothesis fuzz of the endpoints (most of the unit tests' time) runs
  # once, in pytest below: what it checks does not depend on Flask's version.
  echo "== nox: tests/unit with the oldest supported Flask"
  .venv/bin/nox -s "unit(flask='oldest')" -- --ignore=tests/unit/test_fuzz_endpoints.py
fi

echo "== pytest"
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
