# Creates, for each service, its bucket, a policy allowing object operations on that
# bucket only, and a MinIO user of the same name holding that policy. Idempotent: run
# again after adding a region (its name in USERS below, a policy file beside this one).
# The root credentials come from MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (compose) or from
# the files under /etc/minio/root (k8s); each user's secret key from USERS_DIR/<user>.
set -eu
USERS="fairstream-eu fairstream-directory"
root_user=${MINIO_ROOT_USER:-$(cat /etc/minio/root/root-user)}
root_password=${MINIO_ROOT_PASSWORD:-$(cat /etc/minio/root/root-password)}
mc alias set store "${MINIO_URL:-http://fairstream-minio:9000}" "$root_user" "$root_password"
for user in $USERS; do
  mc mb --ignore-existing "store/$user"
  mc admin policy create store "$user" "${POLICIES_DIR:-/etc/minio/policies}/$user.json"
  mc admin user add store "$user" "$(cat "${USERS_DIR:-/etc/minio/users}/$user")"
  mc admin policy attach store "$user" --user "$user" || true  # already attached
done
