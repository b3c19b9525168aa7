#!/usr/bin/env bash
# Lint: protobuf style, schema compatibility, generated code up to date, TypeScript lint.
set -euo pipefail
cd "$(dirname "$0")/.."
buf=node_modules/.bin/buf

echo "lint: buf lint"
$buf lint

echo "lint: buf format"
$buf format --diff --exit-code

# Schemas are add-only: compare with the committed baseline (the last released schema) and,
# in a git checkout with history, with the previous commit.
echo "lint: buf breaking against buf/baseline.binpb"
$buf breaking --against buf/baseline.binpb
if git rev-parse -q --verify 'HEAD~1:proto' >/dev/null 2>&1; then
  echo "lint: buf breaking against HEAD~1"
  $buf breaking --against '.git#ref=HEAD~1'
fi

echo "lint: generated code is up to date"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r packages/protocol/src/gen "$tmp/committed"
$buf generate
if ! diff -r "$tmp/committed" packages/protocol/src/gen >/dev/null; then
  diff -r "$tmp/committed" packages/protocol/src/gen | head -20
  echo "lint: generated code differs from the schema; run 'npm run gen' and commit" >&2
  exit 1
fi

echo "lint: eslint"
node_modules/.bin/eslint --max-warnings 0 packages test scripts
