#!/usr/bin/env bash
# A trained model on Vertex AI: upload it to the Model Registry on TensorFlow's prebuilt prediction container,
# serve it from an endpoint, ask it, or run a batch prediction job. docs/serving.md walks through every step.
#
#   jobs/model_endpoint.sh upload gs://BUCKET/fmnist/cnn-vertex      # a SavedModel whose default takes image_bytes
#   jobs/model_endpoint.sh create-endpoint
#   jobs/model_endpoint.sh deploy ENDPOINT_ID MODEL_ID
#   jobs/model_endpoint.sh predict ENDPOINT_ID photo.jpg [more.png ...]
#   jobs/model_endpoint.sh batch-predict MODEL_ID                    # jobs/batch-prediction.yaml, filled in
#   jobs/model_endpoint.sh ... --dry-run                               # print the command instead of running it
#
# Environment:
#   PROJECT_ID       the Google Cloud project (default: gcloud's configured project)
#   REGION           the Vertex AI region (default us-central1)
#   BUCKET           batch-predict only: the bucket of the instances and predictions, without gs://
#   CONTAINER_URI    the serving container (default: TensorFlow's prebuilt CPU one, tf2-cpu.2-15, in REGION's
#                    multi-region)
#   MACHINE_TYPE     the endpoint's machine (default n1-standard-2)
#   DISPLAY_NAME     the model's, endpoint's or job's name (default fmnist-cnn, fmnist-endpoint, fmnist-batch-...)
#   SERVICE_ACCOUNT  batch-predict: the job's service account (default fmnist-predictor@PROJECT_ID...)
#   GCLOUD, CURL, PYTHON   the clients (default gcloud, curl, python3 with PyYAML)
set -euo pipefail

usage() {
  echo "usage: $0 {upload ARTIFACT_URI | create-endpoint | deploy ENDPOINT_ID MODEL_ID |" \
       "predict ENDPOINT_ID IMAGE... | batch-predict MODEL_ID} [--dry-run]" >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
action="$1"
shift
dry_run=0
arguments=()
for argument in "$@"; do
  if [[ "$argument" == "--dry-run" ]]; then dry_run=1; else arguments+=("$argument"); fi
done
set -- "${arguments[@]+"${arguments[@]}"}"

jobs_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=common.sh
source "$jobs_dir/common.sh"
gcloud_cmd="${GCLOUD:-gcloud}"
find_project
region="${REGION:-us-central1}"
case "$region" in
  europe-*) registry=europe-docker.pkg.dev ;;
  asia-*|australia-*) registry=asia-docker.pkg.dev ;;
  *) registry=us-docker.pkg.dev ;;
esac
container="${CONTAINER_URI:-$registry/vertex-ai/prediction/tf2-cpu.2-15:latest}"
workdir="$(mktemp -d "${TMPDIR:-/tmp}/fmnist-vertex-XXXXXX")"
trap 'rm -rf "$workdir"' EXIT

case "$action" in
  upload)
    [[ $# -eq 1 && "$1" == gs://* ]] || usage
    run "$gcloud_cmd" ai models upload --project="$project" --region="$region" \
      --display-name="${DISPLAY_NAME:-fmnist-cnn}" --artifact-uri="${1%/}" --container-image-uri="$container"
    ;;
  create-endpoint)
    [[ $# -eq 0 ]] || usage
    run "$gcloud_cmd" ai endpoints create --project="$project" --region="$region" \
      --display-name="${DISPLAY_NAME:-fmnist-endpoint}"
    ;;
  deploy)
    [[ $# -eq 2 ]] || usage
    run "$gcloud_cmd" ai endpoints deploy-model "$1" --project="$project" --region="$region" --model="$2" \
      --display-name="${DISPLAY_NAME:-fmnist-cnn}" --machine-type="${MACHINE_TYPE:-n1-standard-2}" \
      --min-replica-count=1 --max-replica-count=2 --traffic-split=0=100
    ;;
  predict)
    [[ $# -ge 2 ]] || usage
    endpoint="$1"
    shift
    request="$workdir/request.json"
    {
      printf '{"instances": ['
      separator=""
      for image in "$@"; do
        [[ -f "$image" ]] || { echo "$0: no file $image" >&2; exit 2; }
        printf '%s{"image_bytes": {"b64": "%s"}}' "$separator" "$(base64 -w0 < "$image")"
        separator=", "
      done
      printf ']}\n'
    } > "$request"
    [[ $dry_run == 1 ]] && request_copy="$(mktemp "${TMPDIR:-/tmp}/fmnist-request-XXXXXX.json")" \
      && cp "$request" "$request_copy" && request="$request_copy"
    run "$gcloud_cmd" ai endpoints predict "$endpoint" --project="$project" --region="$region" \
      --json-request="$request"
    ;;
  batch-predict)
    [[ $# -eq 1 ]] || usage
    bucket="${BUCKET:-}"
    bucket="${bucket#gs://}"
    bucket="${bucket%/}"
    [[ -n "$bucket" ]] || { echo "$0: set BUCKET to the bucket of the instances and predictions" >&2; exit 2; }
    body="$workdir/batch-prediction.json"
    MODEL_ID="$1" PROJECT_ID="$project" REGION="$region" BUCKET="$bucket" \
      DISPLAY_NAME="${DISPLAY_NAME:-fmnist-batch-$(date -u +%Y%m%d-%H%M%S)}" \
      SERVICE_ACCOUNT="${SERVICE_ACCOUNT:-fmnist-predictor@$project.iam.gserviceaccount.com}" \
      "${PYTHON:-python3}" -c '
import json, os, sys, yaml
spec = yaml.safe_load(open(sys.argv[1]))
env = os.environ
spec["displayName"] = env["DISPLAY_NAME"]
spec["model"] = "projects/%s/locations/%s/models/%s" % (env["PROJECT_ID"], env["REGION"], env["MODEL_ID"])
spec["serviceAccount"] = env["SERVICE_ACCOUNT"]
bucket = "gs://%s/" % env["BUCKET"]
source = spec["inputConfig"]["gcsSource"]
source["uris"] = [uri.replace("gs://BUCKET/", bucket) for uri in source["uris"]]
destination = spec["outputConfig"]["gcsDestination"]
destination["outputUriPrefix"] = destination["outputUriPrefix"].replace("gs://BUCKET/", bucket)
json.dump(spec, sys.stdout, indent=2)
' "$jobs_dir/batch-prediction.yaml" > "$body"
    if [[ $dry_run == 1 ]]; then
      kept="$(mktemp "${TMPDIR:-/tmp}/fmnist-batch-prediction-XXXXXX.json")"
      cp "$body" "$kept"
      body="$kept"
      # shellcheck disable=SC2016  # printed for the reader to run, not expanded here
      token='$(gcloud auth print-access-token)'
    else
      token="$("$gcloud_cmd" auth print-access-token)"
    fi
    run "${CURL:-curl}" --fail-with-body --silent --show-error -X POST \
      -H "Authorization: Bearer $token" -H "Content-Type: application/json" --data-binary "@$body" \
      "https://$region-aiplatform.googleapis.com/v1/projects/$project/locations/$region/batchPredictionJobs"
    ;;
  *)
    usage
    ;;
esac
