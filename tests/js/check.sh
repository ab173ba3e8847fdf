#!/usr/bin/env bash
# Checks of the browser runtime (flask_athena/static/athena.js), run by tests/run.sh:
#   node --test        its unit tests (tests/js/*.test.mjs, fakes for the browser)
#   tsc --checkJs      its JSDoc types, strict (jsconfig.json)
#   athena.d.ts        the shipped declarations match the JSDoc
#   bash tests/js/check.sh --write-dts     regenerates athena.d.ts after a change
# TypeScript (pinned) is installed into .ci/node/ (gitignored), never globally.
set -euo pipefail
cd "$(dirname "$0")/../.."

TYPESCRIPT_VERSION=5.9.3
tsc=.ci/node/node_modules/.bin/tsc
if [ "$("$tsc" --version 2>/dev/null)" != "Version $TYPESCRIPT_VERSION" ]; then
  echo "== installing typescript@$TYPESCRIPT_VERSION into .ci/node"
  npm install --prefix .ci/node --no-audit --no-fund --silent "typescript@$TYPESCRIPT_VERSION"
fi

dts=flask_athena/static/athena.d.ts
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# One tsc run: it type-checks (strict, jsconfig.json) and writes the declarations.
echo "== tsc --checkJs --strict (jsconfig.json), athena.d.ts"
"$tsc" -p jsconfig.json --noEmit false --declaration --emitDeclarationOnly --outDir "$tmp"
if [ "${1:-}" = "--write-dts" ]; then
  cp "$tmp/athena.d.ts" "$dts"
  echo "wrote $dts"
  exit 0
fi
if ! diff -u "$dts" "$tmp/athena.d.ts"; then
  echo "$dts is out of date: run 'bash tests/js/check.sh --write-dts' and commit it" >&2
  exit 1
fi

echo "== node --test tests/js"
node --test --test-reporter=dot tests/js/*.test.mjs
