#!/bin/bash
# Once, when the cluster is up: the topics (replicated three times), the services'
# SCRAM users and their ACLs. Safe to run again: it creates only what is missing.
set -euo pipefail
: "${KAFKA_ADMIN_PASSWORD:?}" "${PUBLISHER_KAFKA_PASSWORD:?}" "${EU_KAFKA_PASSWORD:?}" \
  "${DIRECTORY_KAFKA_PASSWORD:?}"

bootstrap=kafka-1:9093,kafka-2:9093,kafka-3:9093
admin=/tmp/admin.properties
cat >"$admin" <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${KAFKA_ADMIN_PASSWORD}";
ssl.truststore.type=PEM
ssl.truststore.location=/run/secrets/kafka-ca.pem
PROPERTIES
bin=/opt/kafka/bin

topic() { # NAME PARTITIONS [--config KEY=VALUE]...
  local name=$1 partitions=$2
  shift 2
  "$bin/kafka-topics.sh" --bootstrap-server "$bootstrap" --command-config "$admin" \
    --create --if-not-exists --topic "$name" --partitions "$partitions" \
    --replication-factor 3 "$@"
}
# The topics of connectors/kafka_topics.py's Topics (tests/unit/test_production_manifests.py
# checks the names). node rebuild reads releases and trust from offset 0, and every
# worker reads replicas whole: those keep every record. Records anyone may produce are
# capped at Kafka's default 1 MiB, pinned (a signed event is at most 256 KiB; nodes refuse
# anything larger unread: docs/threat-model.md, "Size limits, end to end"). Download counts
# are spread by region over 64 partitions, as Topics.partitions says: a region's workers
# read only their region's (schemas/partitioning.py).
topic fair.releases 12 --config retention.ms=-1 --config max.message.bytes=1048588
topic fair.trust 1 --config retention.ms=-1 --config max.message.bytes=1048588
topic fair.replicas 1 --config retention.ms=-1
topic fair.downloads 64 --config retention.ms=7776000000
topic fair.rejected 1 --config retention.ms=7776000000 --config max.message.bytes=1048588
topic fair.status 1 --config cleanup.policy=compact
# Each region's view (and the directory's): its workers' derived metadata, which its
# workers and frontends follow into their local views. Compacted: one record a package.
topic fair.view.eu 12 --config cleanup.policy=compact
topic fair.view.directory 12 --config cleanup.policy=compact

user() { # NAME PASSWORD
  "$bin/kafka-configs.sh" --bootstrap-server "$bootstrap" --command-config "$admin" \
    --alter --entity-type users --entity-name "$1" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$2]"
}
user fairstream-publisher "$PUBLISHER_KAFKA_PASSWORD"
user fairstream-eu "$EU_KAFKA_PASSWORD"
user fairstream-directory "$DIRECTORY_KAFKA_PASSWORD"

acl() {
  "$bin/kafka-acls.sh" --bootstrap-server "$bootstrap" --command-config "$admin" --add "$@"
}
# Every service sees the fair.* topics (it checks they exist before it starts).
for principal in User:fairstream-publisher User:fairstream-eu User:fairstream-directory; do
  acl --allow-principal "$principal" --operation Describe \
    --topic fair. --resource-pattern-type prefixed
done
# The publishing service writes releases and nothing else.
acl --allow-principal User:fairstream-publisher --operation Write --topic fair.releases
# Nodes and the directory read every fair.* topic, write what a node records, and use
# consumer groups named fairstream-* (fairstream-node-REGION and its readers).
for principal in User:fairstream-eu User:fairstream-directory; do
  acl --allow-principal "$principal" --operation Read --topic fair. --resource-pattern-type prefixed
  for written in fair.rejected fair.replicas fair.downloads fair.status; do
    acl --allow-principal "$principal" --operation Write --topic "$written"
  done
  acl --allow-principal "$principal" --operation Read --operation Describe \
    --group fairstream- --resource-pattern-type prefixed
done
# Each writes its own view and no other.
acl --allow-principal User:fairstream-eu --operation Write --topic fair.view.eu
acl --allow-principal User:fairstream-directory --operation Write --topic fair.view.directory
