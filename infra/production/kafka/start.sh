#!/bin/bash
# Start one node of the cluster: write its configuration, format its storage on the
# first start (with the admin's SCRAM credentials, which brokers use between them),
# then run it. The compose file sets NODE_ID, CLUSTER_ID and the passwords.
set -euo pipefail
: "${NODE_ID:?}" "${CLUSTER_ID:?}" "${KAFKA_ADMIN_PASSWORD:?}" "${KAFKA_KEYSTORE_PASSWORD:?}"

config=/tmp/server.properties
cp /opt/fairstream-kafka/server.properties "$config"
cat >>"$config" <<PROPERTIES
node.id=${NODE_ID}
advertised.listeners=CLIENT://kafka-${NODE_ID}:9093
ssl.keystore.location=/run/secrets/kafka-${NODE_ID}.p12
ssl.keystore.password=${KAFKA_KEYSTORE_PASSWORD}
ssl.key.password=${KAFKA_KEYSTORE_PASSWORD}
listener.name.client.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${KAFKA_ADMIN_PASSWORD}";
PROPERTIES

# Kept for the health check and for `docker compose exec` (README.md).
cat >/tmp/admin.properties <<PROPERTIES
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${KAFKA_ADMIN_PASSWORD}";
ssl.truststore.type=PEM
ssl.truststore.location=/run/secrets/kafka-ca.pem
PROPERTIES

/opt/kafka/bin/kafka-storage.sh format --config "$config" --cluster-id "$CLUSTER_ID" \
  --ignore-formatted \
  --add-scram "SCRAM-SHA-512=[name=admin,password=${KAFKA_ADMIN_PASSWORD}]"
exec /opt/kafka/bin/kafka-server-start.sh "$config"
