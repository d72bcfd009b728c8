#!/bin/sh
# Who may do what on twofa's topics: run once per deployment (and again after a password
# change) with the Kafka command-line tools (the apache/kafka image has them), as a
# principal that may create topics, users and ACLs. docker-compose.yml runs it as the
# one-shot `topics` service; on Kubernetes deploy/k8s/jobs/kafka-access.yaml does.
#
#   KAFKA_BOOTSTRAP          the brokers, host:port
#   KAFKA_COMMAND_CONFIG     optional: client properties of the admin (SASL_SSL, its JAAS)
#   TWOFA_TOPIC              default twofa.events.v1 (its dead-letter topic: + .dlq)
#   TWOFA_GROUP_PREFIX       default twofa (consumer groups are <prefix>.<name>)
#   TOPIC_PARTITIONS         default 4;  TOPIC_REPLICATION  default 1 (3 on a real cluster)
#   KAFKA_RELAY_PASSWORD, KAFKA_AUTH_PASSWORD, KAFKA_ENROLMENT_PASSWORD,
#   KAFKA_AUDIT_PASSWORD     the SCRAM-SHA-512 passwords of the four twofa principals
#
# The rules (tests/unit/test_deploy.py reads them from this file): only twofa-relay may
# write the events topic; auth, enrolment and audit may read it, each use its own consumer
# group and write the dead-letter topic; nobody else gets anything (the brokers run with
# allow.everyone.if.no.acl.found=false). Placeholder or empty passwords are refused, and
# no password is echoed.
set -eu

BIN=${KAFKA_BIN:-/opt/kafka/bin}
TOPIC=${TWOFA_TOPIC:-twofa.events.v1}
DLQ="$TOPIC.dlq"
PREFIX=${TWOFA_GROUP_PREFIX:-twofa}
: "${KAFKA_BOOTSTRAP:?KAFKA_BOOTSTRAP is not set}"

admin() {
    tool=$1
    shift
    if [ -n "${KAFKA_COMMAND_CONFIG:-}" ]; then
        "$BIN/$tool" --bootstrap-server "$KAFKA_BOOTSTRAP" --command-config "$KAFKA_COMMAND_CONFIG" "$@"
    else
        "$BIN/$tool" --bootstrap-server "$KAFKA_BOOTSTRAP" "$@"
    fi
}

for name in RELAY AUTH ENROLMENT AUDIT; do
    eval "password=\${KAFKA_${name}_PASSWORD:-}"
    case "$password" in
        "" | *REPLACE_ME*)
            echo "twofa: refusing an empty or placeholder KAFKA_${name}_PASSWORD" >&2
            exit 1
            ;;
        *[!A-Za-z0-9_-]*)
            # SCRAM's --add-config syntax splits on ',' and ']': keep passwords plain.
            echo "twofa: KAFKA_${name}_PASSWORD must be letters, digits, '-' or '_'" >&2
            exit 1
            ;;
    esac
done

for topic in "$TOPIC" "$DLQ"; do
    admin kafka-topics.sh --create --if-not-exists --topic "$topic" \
        --partitions "${TOPIC_PARTITIONS:-4}" --replication-factor "${TOPIC_REPLICATION:-1}"
done

user() {  # user NAME PASSWORD: create or update its SCRAM-SHA-512 credential
    admin kafka-configs.sh --alter --entity-type users --entity-name "$1" \
        --add-config "SCRAM-SHA-512=[iterations=8192,password=$2]" > /dev/null
    echo "twofa: SCRAM-SHA-512 credential of $1 set"
}

user twofa-relay "$KAFKA_RELAY_PASSWORD"
user twofa-auth "$KAFKA_AUTH_PASSWORD"
user twofa-enrolment "$KAFKA_ENROLMENT_PASSWORD"
user twofa-audit "$KAFKA_AUDIT_PASSWORD"

# The relay: the only writer of the events topic (and it reads its end offsets).
admin kafka-acls.sh --add --allow-principal User:twofa-relay \
    --operation Write --operation Describe --topic "$TOPIC"
admin kafka-acls.sh --add --allow-principal User:twofa-relay \
    --operation Describe --topic "$DLQ"

# The consumers: read the events, each in its own group only; dead letters go to the DLQ.
consumer() {  # consumer PRINCIPAL GROUP
    admin kafka-acls.sh --add --allow-principal "User:$1" \
        --operation Read --operation Describe --topic "$TOPIC"
    admin kafka-acls.sh --add --allow-principal "User:$1" \
        --operation Read --group "$PREFIX.$2"
    admin kafka-acls.sh --add --allow-principal "User:$1" \
        --operation Write --operation Describe --topic "$DLQ"
}

consumer twofa-auth auth-sessions
consumer twofa-enrolment enrolment-labels
consumer twofa-audit audit

admin kafka-acls.sh --list --topic "$TOPIC"
