#!/usr/bin/env bash
# One-shot set-up of the planr-bus Kafka cluster (compose.yaml service kafka-setup), run as
# the super user `admin` once the three nodes are up:
#  1. the SCRAM users of the bus's own services, each with the password of its secret;
#  2. every ACL of `planr acls --format kafka-acls`: the lines the `acls` service wrote to
#     /acls/acls.sh (one kafka-acls.sh command per principal and resource, ~1,200 lines; each
#     starts a JVM, so they run four at a time and take a few minutes). Adding an ACL that
#     exists is a no-op, so the service can run again after a change of the topic registry.
# The users of agencies and recipients are created when each is connected (docs/operations.md):
# their ACLs are already in place.
set -euo pipefail
export PATH=/opt/kafka/bin:$PATH
bootstrap=kafka-1:9092,kafka-2:9092,kafka-3:9092

umask 077
mkdir -p /tmp/planr
password=$(cat /run/secrets/kafka_admin_password)
cat >/tmp/planr/admin.properties <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${password}";
PROPERTIES

for user in planr-provisioner planr-router planr-aggregator planr-projector planr-inboxes \
    planr-jib; do
  secret=/run/secrets/kafka_${user//-/_}_password
  user_password=$(cat "$secret")
  if [[ ! $user_password =~ ^[A-Za-z0-9]{16,}$ ]]; then
    echo "$secret: use 16 or more letters and digits (openssl rand -hex 24)" >&2
    exit 2
  fi
  kafka-configs.sh --bootstrap-server "$bootstrap" --command-config /tmp/planr/admin.properties \
    --alter --entity-type users --entity-name "$user" \
    --add-config "SCRAM-SHA-512=[password=${user_password}]" >/dev/null
  echo "user $user: SCRAM-SHA-512 credentials set"
done

acls=/acls/acls.sh
lines=$(grep -c . "$acls")
echo "applying $lines ACL commands"
running=0
while IFS= read -r line; do
  [[ -n $line ]] || continue
  bash -c "$line" >/dev/null &
  running=$((running + 1))
  if ((running >= 4)); then
    wait -n
    running=$((running - 1))
  fi
done <"$acls"
while ((running > 0)); do
  wait -n
  running=$((running - 1))
done
echo "ACLs applied"
