#!/usr/bin/env bash
# The main job on the embedded default (no server): ingest → train → tag → explain → search → similar → feedback.
set -uo pipefail
cd "$(dirname "$0")/.."
export SHOPTAG_CONFIG=examples/shoptag.toml
rm -rf shoptag-workspace/demo
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
must() { "$@" || { echo "demo failed at: $*" >&2; exit 1; }; }

step "1. ingest the bundled sample catalog (70 products, Chinese and English, some with photos)"
must shoptag ingest examples/sample_catalog.jsonl
step "2. ingest a catalog of bad records: each is rejected with its line and reason, nothing crashes (exit 3)"
shoptag ingest examples/bad_catalog.jsonl; [ $? -eq 3 ] || { echo "expected exit code 3 (rejects)" >&2; exit 1; }
step "3. train: kNN index + classifier heads + lexical model, fused and calibrated (cross-fitted: small catalog)"
must shoptag train
step "4. tag every product; a tag below the precision target becomes 'needs review', never a guess (50 labelled products, the sample's 49 and ok-1 of the bad catalog, cannot certify 0.9 at 95% confidence: here every tag waits for review, and train/explain say why)"
must shoptag tag
step "5. explain the tags of two unlabelled products"
must shoptag explain sp-008
must shoptag explain sp-019
step "6. hybrid search (BM25 + vectors, reciprocal rank fusion) in Chinese and English, with facets"
must shoptag search "牛仔" --facet category
must shoptag search "watch" --facet colour
step "7. similar products"
must shoptag similar sp-001 --k 5
step "8. shopper events in, then recommendations: personal, for a new visitor, and 'bought together'"
must shoptag events examples/sample_events.csv
must shoptag recommend u001 --k 5
must shoptag recommend someone-new --k 3
must shoptag similar sp-001 --k 5 --mode blend
step "9. a person's corrections: applied, never overwritten, used by the next training"
shoptag feedback examples/feedback.jsonl; [ $? -eq 3 ] || { echo "expected exit code 3 (one unknown id)" >&2; exit 1; }
must shoptag tag
must shoptag explain sp-008
printf '\ndemo done: the workspace is shoptag-workspace/demo (SQLite store, models, search index, rejects)\n'
printf 'to go on with it: export SHOPTAG_CONFIG=examples/shoptag.toml (its settings: the encoders it was built with), then .venv/bin/shoptag ...\n'
