#!/usr/bin/env bash
# Walk every REST route of a running service the way a user would, and show each answer.
#   scripts/smoke.sh KEY [BASE_URL]        (KEY: an admin or auditor key shows the audit log too)
set -euo pipefail
key=${1:?usage: scripts/smoke.sh API_KEY [BASE_URL]}
base=${2:-http://127.0.0.1:8000}
auth="Authorization: Bearer $key"
json="Content-Type: application/json"

step() { printf '\n== %s\n' "$*"; }
call() { curl -sS -w '\n(HTTP %{http_code})\n' "$@"; }

step "health"
call "$base/healthz"
call "$base/readyz"

step "run a task"
result=$(curl -sS -X POST "$base/tools/run_agent_task" -H "$auth" -H "$json" \
  -d '{"prompt": "Name three primary colours.", "context": {"source": "smoke.sh"}}')
echo "$result"
task_id=$(printf '%s' "$result" | python3 -c 'import json, sys; print(json.load(sys.stdin)["task_id"])')

step "read it back (audited)"
call "$base/resources/get_agent_result/$task_id" -H "$auth"

step "list my tasks"
call "$base/resources/agent_results?limit=5" -H "$auth"

step "cancel it: it has already finished (409 already_finished)"
call -X POST "$base/resources/get_agent_result/$task_id/cancel" -H "$auth"

step "the audit log for this task (auditor or admin keys only)"
call "$base/audit/events?task_id=$task_id" -H "$auth"

step "erase it, then erase again (204, then 404)"
call -X DELETE "$base/resources/get_agent_result/$task_id" -H "$auth"
call -X DELETE "$base/resources/get_agent_result/$task_id" -H "$auth"

step "no key (401)"
call "$base/resources/agent_results"
