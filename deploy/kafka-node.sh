#!/usr/bin/env bash
# One node of the planr-bus Kafka cluster (compose.yaml): KRaft, broker and controller in one
# process, on the official apache/kafka image (its /opt/kafka/bin tools only).
#
# Two listeners, both SASL (no listener admits anonymous clients):
#   BUS        :9092  clients and inter-broker traffic, SCRAM-SHA-512
#   CONTROLLER :9093  the KRaft quorum, PLAIN (KRaft controllers cannot use SCRAM: their
#                     users live in the metadata log the controllers serve)
# The super user `admin` (password: the secret kafka_admin_password) is written into the
# metadata log when the storage is formatted (`kafka-storage.sh format --add-scram`), so that
# the brokers can authenticate to each other from the first start; every other user is
# created afterwards by kafka-setup (deploy/kafka-setup.sh). The authorizer denies whatever
# no ACL allows.
#
# Environment: NODE_ID (1, 2 or 3), CLUSTER_ID (the same on every node).
# Passwords are hex strings (see docs/operations.md): they go into properties and JAAS text.
set -euo pipefail
: "${NODE_ID:?NODE_ID is not set}" "${CLUSTER_ID:?CLUSTER_ID is not set}"

password=$(cat /run/secrets/kafka_admin_password)
if [[ ! $password =~ ^[A-Za-z0-9]{16,}$ ]]; then
  echo "kafka_admin_password: use 16 or more letters and digits (openssl rand -hex 24)" >&2
  exit 2
fi

umask 077                       # the files below hold the admin password
config_dir=/tmp/planr
mkdir -p "$config_dir"
config=$config_dir/server.properties
cat >"$config" <<PROPERTIES
process.roles=broker,controller
node.id=${NODE_ID}
controller.quorum.voters=1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093
listeners=BUS://:9092,CONTROLLER://:9093
advertised.listeners=BUS://kafka-${NODE_ID}:9092
listener.security.protocol.map=BUS:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=BUS
controller.listener.names=CONTROLLER
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
sasl.mechanism.controller.protocol=PLAIN
listener.name.bus.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.bus.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${password}";
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${password}" user_admin="${password}";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin
auto.create.topics.enable=false
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
unclean.leader.election.enable=false
log.dirs=/var/lib/kafka/data
log.retention.hours=-1
PROPERTIES

# The admin's client properties, for the health check (compose.yaml).
cat >"$config_dir/admin.properties" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${password}";
PROPERTIES

/opt/kafka/bin/kafka-storage.sh format --ignore-formatted --cluster-id "$CLUSTER_ID" \
  --config "$config" --add-scram "SCRAM-SHA-512=[name=admin,password=${password}]"
exec /opt/kafka/bin/kafka-server-start.sh "$config"
