# shellcheck shell=bash
# Shared by jobs/submit_vertex.sh and jobs/model_endpoint.sh (sourced, not run): the Google Cloud project, and
# running a command or, with --dry-run, printing it.

# The project: $PROJECT_ID, else gcloud's configured one; exits 2 with one line without either. Sets $project.
find_project() {
  project="${PROJECT_ID:-}"
  if [[ -z "$project" ]]; then
    project="$("${GCLOUD:-gcloud}" config get-value project 2>/dev/null || true)"
  fi
  [[ -n "$project" ]] || { echo "$0: set PROJECT_ID (or: gcloud config set project PROJECT_ID)" >&2; exit 2; }
}

# Runs its arguments, or prints them shell-quoted when $dry_run is 1.
run() {
  if [[ ${dry_run:-0} == 1 ]]; then
    printf '%q ' "$@"
    echo
  else
    "$@"
  fi
}
