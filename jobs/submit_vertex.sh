#!/usr/bin/env bash
# Submits a Vertex AI custom job from one of the specs in jobs/, with its placeholders filled in.
#
#   BUCKET=my-bucket jobs/submit_vertex.sh gpu              # jobs/customjob-gpu.yaml
#   BUCKET=my-bucket jobs/submit_vertex.sh multi-worker     # jobs/customjob-multi-worker.yaml
#   BUCKET=my-bucket jobs/submit_vertex.sh gpu --dry-run    # write the filled-in spec, print the command only
#
# Environment:
#   BUCKET           the Cloud Storage bucket for the outputs, without gs:// (required)
#   PROJECT_ID       the Google Cloud project (default: gcloud's configured project)
#   REGION           the Vertex AI region (default us-central1)
#   IMAGE_URI        the trainer image (default REGION-docker.pkg.dev/PROJECT_ID/fmnist/fmnist-trainer:0.1.0-gpu)
#   SERVICE_ACCOUNT  the service account the job runs as (default fmnist-trainer@PROJECT_ID.iam.gserviceaccount.com)
#   DISPLAY_NAME     the job's name in the console (default fmnist-SPEC-YYYYmmdd-HHMMSS)
#   GCLOUD           the gcloud client (default gcloud)
set -euo pipefail

usage() {
  echo "usage: BUCKET=NAME $0 {gpu|multi-worker} [--dry-run]" >&2
  exit 2
}

[[ $# -ge 1 && $# -le 2 ]] || usage
spec_name="$1"
dry_run=0
if [[ $# -eq 2 ]]; then
  [[ "$2" == "--dry-run" ]] || usage
  dry_run=1
fi
jobs_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
spec="$jobs_dir/customjob-$spec_name.yaml"
[[ -f "$spec" ]] || { echo "$0: no spec $spec (choose gpu or multi-worker)" >&2; exit 2; }

gcloud_cmd="${GCLOUD:-gcloud}"
bucket="${BUCKET:-}"
bucket="${bucket#gs://}"
bucket="${bucket%/}"
[[ -n "$bucket" ]] || { echo "$0: set BUCKET to the Cloud Storage bucket for the outputs" >&2; exit 2; }
project="${PROJECT_ID:-}"
if [[ -z "$project" ]]; then
  project="$("$gcloud_cmd" config get-value project 2>/dev/null || true)"
fi
[[ -n "$project" ]] || { echo "$0: set PROJECT_ID (or: gcloud config set project PROJECT_ID)" >&2; exit 2; }
region="${REGION:-us-central1}"
image="${IMAGE_URI:-$region-docker.pkg.dev/$project/fmnist/fmnist-trainer:0.1.0-gpu}"
service_account="${SERVICE_ACCOUNT:-fmnist-trainer@$project.iam.gserviceaccount.com}"
display_name="${DISPLAY_NAME:-fmnist-$spec_name-$(date -u +%Y%m%d-%H%M%S)}"

# A value may not contain the sed delimiter or a newline.
for value in "$bucket" "$project" "$region" "$image" "$service_account"; do
  if [[ "$value" == *"|"* || "$value" == *$'\n'* ]]; then
    echo "$0: invalid value: $value" >&2
    exit 2
  fi
done

config="$(mktemp "${TMPDIR:-/tmp}/fmnist-customjob-XXXXXX")"
trap 'rm -f "$config"' EXIT
sed -E \
  -e "s|^( *imageUri: ).*|\\1$image|" \
  -e "s|^( *serviceAccount: ).*|\\1$service_account|" \
  -e "s|gs://BUCKET/|gs://$bucket/|g" \
  "$spec" > "$config"
if grep -nE 'PROJECT_ID|REGION|BUCKET' "$config" | grep -v '^[0-9]*: *#' >&2; then
  echo "$0: placeholders left in the spec (above)" >&2
  exit 2
fi

cmd=("$gcloud_cmd" ai custom-jobs create "--project=$project" "--region=$region"
  "--display-name=$display_name" "--config=$config")
if [[ "$dry_run" == 1 ]]; then
  trap - EXIT  # keep the filled-in spec for inspection
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
"${cmd[@]}"
