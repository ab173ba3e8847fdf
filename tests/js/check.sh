#!/usr/bin/env bash
# Checks of the browser runtime (flask_athena/static/athena.js), run by tests/run.sh:
#   node --test        its unit tests (tests/js/*.test.mjs, fakes for the browser)
#   tsc --checkJs      its JSDoc types, strict (jsconfig.json)
#   *.d.ts             the shipped declarations (athena.d.ts, athena-shared.d.ts) match the JSDoc
#   bash tests/js/check.sh --write-dts     regenerates them after a change
# TypeScript (pinned) is installed into .ci/node/ (gitignored), never globally.
set -euo pipefail
cd "$(dirname "$0")/../.."

TYPESCRIPT_VERSION=5.9.3
tsc=.ci/node/node_modules/.bin/tsc
if [ "$("$tsc" --version 2>/dev/null)" != "Version $TYPESCRIPT_VERSION" ]; then
  echo "== installing typescript@$TYPESCRIPT_VERSION into .ci/node"
  npm install --prefix .ci/node --no-audit --no-fund --silent "typescript@$TYPESCRIPT_VERSION"
fi

static=flask_athena/static
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# One tsc run: it type-checks (strict, jsconfig.json) and writes the declarations.
echo "== tsc --checkJs --strict (jsconfig.json), *.d.ts"
"$tsc" -p jsconfig.json --noEmit false --declaration --emitDeclarationOnly --outDir "$tmp"
if [ "${1:-}" = "--write-dts" ]; then
  cp "$tmp"/*.d.ts "$static/"
  echo "wrote" "$static"/*.d.ts
  exit 0
fi
# Every declaration file shipped is the one the JSDoc gives, and no other.
drift=0
diff -u <(cd "$static" && ls -1 ./*.d.ts) <(cd "$tmp" && ls -1 ./*.d.ts) || drift=1
for f in "$tmp"/*.d.ts; do
  [ ! -f "$static/$(basename "$f")" ] || diff -u "$static/$(basename "$f")" "$f" || drift=1
done
if [ "$drift" -ne 0 ]; then
  echo "$static/*.d.ts are out of date: run 'bash tests/js/check.sh --write-dts' and commit them" >&2
  exit 1
fi

echo "== node --test tests/js"
node --test --test-reporter=dot tests/js/*.test.mjs
