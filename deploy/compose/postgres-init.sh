#!/bin/bash
# Run once by the official postgres image on an empty data volume (/docker-entrypoint-initdb.d): one role
# and one database per service, each database owned by its service's role and closed to the others, so a
# service cannot read another's tables (each service owns its database; they share data only as events).
set -euo pipefail
: "${CLIENTELA_PG_PASSWORD:?set the password of the service roles}"
for service in ingest profile segmentation; do
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set role="$service" --set db="clientela_$service" --set password="$CLIENTELA_PG_PASSWORD" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"role" ENCODING 'UTF8' TEMPLATE template0;
REVOKE ALL ON DATABASE :"db" FROM PUBLIC;
SQL
done
