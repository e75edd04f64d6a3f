#!/usr/bin/env bash
# Load for the autoscalers to answer: `fractile-load` as a Kubernetes Job in the fractile
# namespace, against the api's Service (http://api.fractile.svc:8080), with an arrival rate
# that rises, holds and falls. Waits for the Job and prints the generator's summary line.
#
#   deploy/kind/load.sh
#   FRACTILE_LOAD_PROFILE=0:50,60:800,240:800,300:50 deploy/kind/load.sh
#
# Settings (environment):
#   FRACTILE_LOAD_PROFILE   `seconds:tile-requests-per-second` points, straight lines between
#                           them; the run ends at the last point. Default: 0:40,90:900,210:900,
#                           300:40,360:40 (a 90 s rise, 2 min at 900/s, a 90 s fall, 1 min low):
#                           the peak of loadtests/autoscaling's recording, where one worker's
#                           65 misses/s fall behind and the queue and in-flight both rise.
#   FRACTILE_LOAD_SCENARIO  browse (default), hot, cold or seed-while-browsing (which seeds with
#                           the api's token, SEED_TOKEN of the fractile-credentials Secret).
#   FRACTILE_LOAD_IMAGE     default: fractile-load with the tag of the running api's image,
#                           which deploy/kind/up.sh built and loaded beside it.
#
# The Job runs under the restricted Pod Security profile like the rest of the namespace; its
# labels (app.kubernetes.io/component: load) are what the network policies let reach the
# api's traffic port. Ctrl-C deletes the Job. Running it again replaces the previous Job.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$ROOT/deploy/kind/lib.sh"

JOB=load
PROFILE=${FRACTILE_LOAD_PROFILE:-0:40,90:900,210:900,300:40,360:40}
SCENARIO=${FRACTILE_LOAD_SCENARIO:-browse}
TARGET="http://api.$NAMESPACE.svc:8080"

case "${1:-}" in
  "") ;;
  -h | --help) usage ;;
  *) die "unknown argument '$1' (try --help)" ;;
esac

printf '%s' "$PROFILE" | grep -Eq '^[0-9]+(\.[0-9]+)?:[0-9]+(\.[0-9]+)?(,[0-9]+(\.[0-9]+)?:[0-9]+(\.[0-9]+)?)*$' ||
  die "FRACTILE_LOAD_PROFILE='$PROFILE' is not a list of seconds:rate points, e.g. 0:40,60:400,180:400,240:40"
case "$SCENARIO" in
  browse | hot | cold | seed-while-browsing) ;;
  *) die "FRACTILE_LOAD_SCENARIO='$SCENARIO': use browse, hot, cold or seed-while-browsing (the ones a profile drives)" ;;
esac
# The run's length is the profile's last point; the Job gets that plus room for a seed's
# start and cancel and for the report, then the API server stops it whatever happens.
last=${PROFILE##*,}
run_seconds=${last%%:*}
run_seconds=${run_seconds%%.*}
deadline_seconds=$((run_seconds + 120))

require_cluster

if [ -n "${FRACTILE_LOAD_IMAGE:-}" ]; then
  image=$FRACTILE_LOAD_IMAGE
else
  api_image=$(kc -n "$NAMESPACE" get deployment api -o jsonpath='{.spec.template.spec.containers[?(@.name=="api")].image}' 2> /dev/null || true)
  [ -n "$api_image" ] || die "no api Deployment in $NAMESPACE: run deploy/kind/up.sh first"
  image="fractile-load:${api_image##*:}"
fi

log "Job $JOB: $SCENARIO, profile $PROFILE (${run_seconds}s), image $image"
kc -n "$NAMESPACE" delete job "$JOB" --ignore-not-found --cascade=foreground --wait=true > /dev/null

# shellcheck disable=SC2317 # run by the trap below
stop_job() {
  trap - INT TERM
  printf '\ninterrupted: deleting Job %s\n' "$JOB" >&2
  kc -n "$NAMESPACE" delete job "$JOB" --ignore-not-found --wait=false > /dev/null 2>&1 || true
  exit 130
}
trap stop_job INT TERM

kc apply -f - << EOF
apiVersion: batch/v1
kind: Job
metadata:
  name: $JOB
  namespace: $NAMESPACE
  labels:
    app.kubernetes.io/name: fractile
    app.kubernetes.io/component: load
    app.kubernetes.io/part-of: fractile
spec:
  # A load test is not retried: a second run would not be the one asked for.
  backoffLimit: 0
  activeDeadlineSeconds: $deadline_seconds
  # The pod and its logs stay an hour for inspection, then go.
  ttlSecondsAfterFinished: 3600
  template:
    metadata:
      labels:
        app.kubernetes.io/name: fractile
        app.kubernetes.io/component: load
        app.kubernetes.io/part-of: fractile
    spec:
      restartPolicy: Never
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        runAsNonRoot: true
        # distroless's nonroot user, as in deploy/Dockerfile.
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: load
          image: $image
          # Loaded into the nodes by kind, never pulled.
          imagePullPolicy: IfNotPresent
          args:
            - run
            - "--target=$TARGET"
            - "--scenario=$SCENARIO"
            - "--profile=$PROFILE"
            - --name=kind
            - --out=/report
          env:
            # The api's seed token, for seed-while-browsing; from the environment, so the
            # report's recorded command line does not carry it.
            - name: FRACTILE_SEED_TOKEN
              valueFrom:
                secretKeyRef:
                  name: fractile-credentials
                  key: SEED_TOKEN
          resources:
            # The generator sends a few hundred requests a second: a fraction of a core.
            requests:
              cpu: 250m
              memory: 64Mi
            limits:
              cpu: "1"
              memory: 256Mi
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: [ALL]
          volumeMounts:
            - name: report
              mountPath: /report
      volumes:
        # results.json and the charts; read-only root file system otherwise.
        - name: report
          emptyDir:
            sizeLimit: 64Mi
EOF

# Polls rather than `kubectl wait --for=condition=complete`, which would sit out the whole
# deadline on a failed Job or a pod that can never start.
start=$(date +%s)
give_up=$((start + deadline_seconds + 120))
last_report=$start
result=""
while :; do
  now=$(date +%s)
  conditions=$(kc -n "$NAMESPACE" get job "$JOB" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type} {end}' 2> /dev/null || true)
  case " $conditions " in
    *" Complete "*) result=complete ;;
    *" Failed "*) result=failed ;;
  esac
  [ -z "$result" ] || break
  waiting=$(kc -n "$NAMESPACE" get pods -l "job-name=$JOB" -o jsonpath='{.items[*].status.containerStatuses[*].state.waiting.reason}' 2> /dev/null || true)
  case "$waiting" in
    *ErrImagePull* | *ImagePullBackOff* | *ErrImageNeverPull* | *InvalidImageName*)
      kc -n "$NAMESPACE" describe pods -l "job-name=$JOB" | tail -n 20 >&2 || true
      kc -n "$NAMESPACE" delete job "$JOB" --ignore-not-found --wait=false > /dev/null 2>&1 || true
      die "the load pod cannot get image $image: was it built and loaded by deploy/kind/up.sh? (kind load docker-image $image --name $CLUSTER)"
      ;;
    *CreateContainerConfigError* | *CreateContainerError*)
      kc -n "$NAMESPACE" describe pods -l "job-name=$JOB" | tail -n 20 >&2 || true
      die "the load pod's container cannot be created (see above)"
      ;;
  esac
  if [ $((now - start)) -ge 60 ] && [ -z "$(kc -n "$NAMESPACE" get pods -l "job-name=$JOB" -o name 2> /dev/null)" ]; then
    # No pod after a minute: the Job controller could not create one (Pod Security, quota).
    kc -n "$NAMESPACE" describe job "$JOB" | tail -n 20 >&2 || true
    die "the Job has no pod after 60 s (see its events above)"
  fi
  if [ "$now" -ge "$give_up" ]; then
    die "the Job did not finish within $((deadline_seconds + 120))s"
  fi
  if [ $((now - last_report)) -ge 30 ]; then
    info "$((now - start))s of about ${run_seconds}s"
    last_report=$now
  fi
  sleep 5
done
trap - INT TERM

logs=$(kc -n "$NAMESPACE" logs "job/$JOB" --tail=200 2> /dev/null || true)
# The generator's last line: "kind: sent N in Ts, goodput G/s, p50 …, p99 …, status {…}, errors E".
summary=$(printf '%s\n' "$logs" | grep -E '^kind: sent ' | tail -n 1 || true)
if [ "$result" = complete ] && [ -n "$summary" ]; then
  log "done"
  echo "$summary"
  exit 0
fi
printf '%s\n' "$logs" | tail -n 30 >&2
kc -n "$NAMESPACE" describe job "$JOB" | tail -n 15 >&2 || true
if [ "$result" = complete ]; then
  die "the load Job completed but printed no summary line (its log is above)"
fi
die "the load Job failed (its log and events are above)"
