//! The PostgreSQL schema, versioned: each migration runs once, in its own transaction, under
//! an advisory lock so two servers starting at once do not both apply it.
//!
//! Every table holding a tenant's data has row-level security, forced (it binds the table's
//! owner too): a row is visible and writable only while the transaction's
//! `carekeep.tenant` setting names its tenant, and with no tenant set nothing is. The
//! servers connect as a member of [`APP_ROLE`], which may read and write rows but owns
//! nothing, so it can neither turn the policies off nor change the tables.

use tokio_postgres::Client;

use super::failed;
use crate::ServerError;

/// The role the servers act as: row access only. A deployment's login role for `serve` is
/// a member of it, and neither the tables' owner nor a superuser (both bypass the policies).
pub const APP_ROLE: &str = "carekeep_app";

/// The schema version this server migrates to.
pub const VERSION: usize = MIGRATIONS.len();

/// The advisory lock migrations take (an arbitrary constant, "carekeep" in ASCII).
const MIGRATION_LOCK: i64 = 0x6361_7265_6b65_6570;

/// The migrations, in order; the position is the version.
const MIGRATIONS: &[&str] = &[
    // 1: tenants with their wrapped data keys; resources whose bodies the server encrypted,
    // beside the index columns searches filter on (codes, dates, opaque ids: never a name);
    // the keyed blind index of patients' names.
    "DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'carekeep_app') THEN
            CREATE ROLE carekeep_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
        END IF;
    END $$;
    CREATE TABLE tenants (
        id           text PRIMARY KEY,
        wrapped_key  bytea NOT NULL
    );
    CREATE TABLE resources (
        tenant        text NOT NULL REFERENCES tenants (id),
        type          text NOT NULL,
        id            text NOT NULL,
        version       bigint NOT NULL,
        last_updated  text NOT NULL,
        patient       text,
        category      text,
        effective     text,
        body          bytea NOT NULL,
        PRIMARY KEY (tenant, type, id)
    );
    CREATE INDEX resources_by_patient ON resources (tenant, patient, last_updated, type, id);
    CREATE TABLE resource_names (
        tenant  text NOT NULL,
        type    text NOT NULL,
        id      text NOT NULL,
        token   bytea NOT NULL,
        FOREIGN KEY (tenant, type, id) REFERENCES resources (tenant, type, id) ON DELETE CASCADE
    );
    CREATE INDEX names_by_token ON resource_names (tenant, token);
    ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
    ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
    CREATE POLICY one_tenant ON tenants
        USING (id = current_setting('carekeep.tenant', true))
        WITH CHECK (id = current_setting('carekeep.tenant', true));
    ALTER TABLE resources ENABLE ROW LEVEL SECURITY;
    ALTER TABLE resources FORCE ROW LEVEL SECURITY;
    CREATE POLICY one_tenant ON resources
        USING (tenant = current_setting('carekeep.tenant', true))
        WITH CHECK (tenant = current_setting('carekeep.tenant', true));
    ALTER TABLE resource_names ENABLE ROW LEVEL SECURITY;
    ALTER TABLE resource_names FORCE ROW LEVEL SECURITY;
    CREATE POLICY one_tenant ON resource_names
        USING (tenant = current_setting('carekeep.tenant', true))
        WITH CHECK (tenant = current_setting('carekeep.tenant', true));
    GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, resources, resource_names TO carekeep_app;",
    // 2: the audit trail, one hash chain per tenant. The application may read and append,
    // never change or remove: the trail is append-only by privilege, not only by code.
    "CREATE TABLE audit_log (
        tenant  text NOT NULL REFERENCES tenants (id),
        seq     bigint NOT NULL,
        record  text NOT NULL,
        PRIMARY KEY (tenant, seq)
    );
    CREATE TABLE audit_checkpoints (
        tenant      text NOT NULL REFERENCES tenants (id),
        seq         bigint NOT NULL,
        checkpoint  text NOT NULL,
        PRIMARY KEY (tenant, seq)
    );
    ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
    ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
    CREATE POLICY one_tenant ON audit_log
        USING (tenant = current_setting('carekeep.tenant', true))
        WITH CHECK (tenant = current_setting('carekeep.tenant', true));
    ALTER TABLE audit_checkpoints ENABLE ROW LEVEL SECURITY;
    ALTER TABLE audit_checkpoints FORCE ROW LEVEL SECURITY;
    CREATE POLICY one_tenant ON audit_checkpoints
        USING (tenant = current_setting('carekeep.tenant', true))
        WITH CHECK (tenant = current_setting('carekeep.tenant', true));
    GRANT SELECT, INSERT ON audit_log, audit_checkpoints TO carekeep_app;",
    // 3: accounts, devices and tokens (token hashes only), each row in its tenant under the
    // same forced policy; usernames, password hashes, device names and TOTP secrets sealed
    // or keyed by the server. A sign-in or a token arrives before its tenant is known: four
    // narrow functions name the tenant of one username key or token hash and nothing else.
    // They run as `carekeep_lookup`, a role that cannot log in and may read only those two
    // columns of those tables, through a policy of its own. The throttle's budgets and
    // windows belong to no tenant and hold keyed hashes and counters only. The owner
    // becomes a member of the lookup role only to hand it the functions, and leaves it (a
    // member would inherit its policies). Tenants get the display name the command line gives
    // them; `deployment` holds a check of the master key the first node or command brought,
    // so a data directory with other keys is refused instead of writing rows no node opens.
    "ALTER TABLE tenants ADD COLUMN name text NOT NULL DEFAULT '';
    CREATE TABLE users (
        id               text PRIMARY KEY,
        tenant           text NOT NULL REFERENCES tenants (id),
        username_key     bytea NOT NULL UNIQUE,
        username_sealed  bytea NOT NULL,
        role             text NOT NULL,
        password_sealed  bytea NOT NULL,
        totp_secret      bytea NOT NULL,
        totp_pending     bytea,
        totp_last_step   bigint NOT NULL DEFAULT -1,
        disabled         boolean NOT NULL DEFAULT false,
        created_at       bigint NOT NULL,
        mac              bytea NOT NULL
    );
    CREATE TABLE idle_limits (
        tenant     text NOT NULL REFERENCES tenants (id),
        role       text NOT NULL,
        idle_secs  bigint NOT NULL,
        PRIMARY KEY (tenant, role)
    );
    CREATE TABLE mfa_challenges (
        token_hash    bytea PRIMARY KEY,
        tenant        text NOT NULL REFERENCES tenants (id),
        user_id       text NOT NULL REFERENCES users (id),
        expires_at    bigint NOT NULL,
        bucket        bytea,
        known_device  boolean NOT NULL DEFAULT false,
        mac           bytea NOT NULL
    );
    CREATE TABLE devices (
        id                 text PRIMARY KEY,
        tenant             text NOT NULL REFERENCES tenants (id),
        user_id            text NOT NULL REFERENCES users (id),
        name_sealed        bytea NOT NULL,
        created_at         bigint NOT NULL,
        last_seen          bigint NOT NULL,
        full_auth_at       bigint NOT NULL,
        revoked            boolean NOT NULL DEFAULT false,
        revoked_by_person  boolean NOT NULL DEFAULT false,
        wipe               boolean NOT NULL DEFAULT false,
        mac                bytea NOT NULL
    );
    CREATE TABLE refresh_tokens (
        token_hash  bytea PRIMARY KEY,
        tenant      text NOT NULL REFERENCES tenants (id),
        device_id   text NOT NULL REFERENCES devices (id),
        issued_at   bigint NOT NULL,
        used        boolean NOT NULL DEFAULT false,
        mac         bytea NOT NULL
    );
    CREATE TABLE access_tokens (
        token_hash  bytea PRIMARY KEY,
        tenant      text NOT NULL REFERENCES tenants (id),
        device_id   text NOT NULL REFERENCES devices (id),
        expires_at  bigint NOT NULL,
        last_used   bigint NOT NULL,
        mac         bytea NOT NULL
    );
    CREATE TABLE sign_in_budgets (
        bucket          bytea PRIMARY KEY,
        failures        bigint NOT NULL,
        blocked_until   bigint NOT NULL,
        last_failure    bigint NOT NULL,
        lease           bytea,
        leased_until    double precision NOT NULL DEFAULT 0
    );
    CREATE INDEX sign_in_budgets_by_age ON sign_in_budgets (last_failure);
    CREATE TABLE sign_in_windows (
        minute    bigint NOT NULL,
        network   bytea NOT NULL,
        attempts  integer NOT NULL,
        PRIMARY KEY (minute, network)
    );
    CREATE TABLE sign_in_failures (
        minute    bigint PRIMARY KEY,
        failures  integer NOT NULL
    );
    DO $$ BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'carekeep_lookup') THEN
            CREATE ROLE carekeep_lookup NOLOGIN NOSUPERUSER NOBYPASSRLS;
        END IF;
    END $$;
    DO $$ DECLARE t text; BEGIN
        FOREACH t IN ARRAY ARRAY['users', 'idle_limits', 'mfa_challenges', 'devices', 'refresh_tokens', 'access_tokens']
        LOOP
            EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
            EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
            EXECUTE format('CREATE POLICY one_tenant ON %I
                USING (tenant = current_setting(''carekeep.tenant'', true))
                WITH CHECK (tenant = current_setting(''carekeep.tenant'', true))', t);
        END LOOP;
    END $$;
    -- Nothing the server keeps of accounts is ever deleted by it (a pending sign-in is taken
    -- by deleting it; an access token never changes): without DELETE, a row cannot be put
    -- back as it was before a flag went forward.
    GRANT SELECT, INSERT, UPDATE ON users, idle_limits, devices, refresh_tokens TO carekeep_app;
    GRANT SELECT, INSERT ON access_tokens TO carekeep_app;
    GRANT SELECT, INSERT, DELETE ON mfa_challenges TO carekeep_app;
    CREATE POLICY lookup ON users FOR SELECT TO carekeep_lookup USING (true);
    CREATE POLICY lookup ON mfa_challenges FOR SELECT TO carekeep_lookup USING (true);
    CREATE POLICY lookup ON refresh_tokens FOR SELECT TO carekeep_lookup USING (true);
    CREATE POLICY lookup ON access_tokens FOR SELECT TO carekeep_lookup USING (true);
    GRANT SELECT (tenant, username_key) ON users TO carekeep_lookup;
    GRANT SELECT (tenant, token_hash) ON mfa_challenges, refresh_tokens, access_tokens TO carekeep_lookup;
    GRANT SELECT, INSERT, UPDATE, DELETE ON sign_in_budgets, sign_in_windows, sign_in_failures TO carekeep_app;
    CREATE FUNCTION tenant_of_username(bytea) RETURNS text
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS 'SELECT tenant FROM public.users WHERE username_key = $1';
    CREATE FUNCTION tenant_of_challenge(bytea) RETURNS text
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS 'SELECT tenant FROM public.mfa_challenges WHERE token_hash = $1';
    CREATE FUNCTION tenant_of_refresh_token(bytea) RETURNS text
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS 'SELECT tenant FROM public.refresh_tokens WHERE token_hash = $1';
    CREATE FUNCTION tenant_of_access_token(bytea) RETURNS text
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS 'SELECT tenant FROM public.access_tokens WHERE token_hash = $1';
    REVOKE ALL ON FUNCTION tenant_of_username(bytea), tenant_of_challenge(bytea),
        tenant_of_refresh_token(bytea), tenant_of_access_token(bytea) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION tenant_of_username(bytea), tenant_of_challenge(bytea),
        tenant_of_refresh_token(bytea), tenant_of_access_token(bytea) TO carekeep_app;
    GRANT carekeep_lookup TO CURRENT_USER;
    GRANT CREATE ON SCHEMA public TO carekeep_lookup;
    ALTER FUNCTION tenant_of_username(bytea) OWNER TO carekeep_lookup;
    ALTER FUNCTION tenant_of_challenge(bytea) OWNER TO carekeep_lookup;
    ALTER FUNCTION tenant_of_refresh_token(bytea) OWNER TO carekeep_lookup;
    ALTER FUNCTION tenant_of_access_token(bytea) OWNER TO carekeep_lookup;
    REVOKE CREATE ON SCHEMA public FROM carekeep_lookup;
    REVOKE carekeep_lookup FROM CURRENT_USER;
    CREATE TABLE deployment (
        key_check  bytea NOT NULL,
        one        boolean PRIMARY KEY DEFAULT true CHECK (one)
    );
    GRANT SELECT, INSERT ON deployment TO carekeep_app;
    GRANT SELECT ON schema_version TO carekeep_app;
    CREATE FUNCTION refuse_undoing() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
        AS $$ BEGIN RAISE EXCEPTION 'carekeep: % cannot be undone', TG_ARGV[0]; END $$;
    CREATE TRIGGER revoked_stays BEFORE UPDATE ON devices FOR EACH ROW
        WHEN ((OLD.revoked AND NOT NEW.revoked) OR (OLD.revoked_by_person AND NOT NEW.revoked_by_person)
              OR (OLD.wipe AND NOT NEW.wipe))
        EXECUTE FUNCTION refuse_undoing('revoking or wiping a device');
    CREATE TRIGGER spent_stays BEFORE UPDATE ON refresh_tokens FOR EACH ROW
        WHEN (OLD.used AND NOT NEW.used) EXECUTE FUNCTION refuse_undoing('spending a refresh token');
    CREATE TRIGGER disabled_stays BEFORE UPDATE ON users FOR EACH ROW
        WHEN ((OLD.disabled AND NOT NEW.disabled) OR NEW.totp_last_step < OLD.totp_last_step)
        EXECUTE FUNCTION refuse_undoing('disabling an account, or using a code,');
    -- What binds a row (its keys, its MAC, and what it was issued with) never changes.
    CREATE FUNCTION refuse_rebinding() RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
        AS $$ BEGIN RAISE EXCEPTION 'carekeep: what % binds cannot change', TG_TABLE_NAME; END $$;
    CREATE TRIGGER bound_users BEFORE UPDATE ON users FOR EACH ROW
        WHEN ((OLD.id, OLD.tenant, OLD.username_key, OLD.username_sealed, OLD.role, OLD.password_sealed,
               OLD.created_at, OLD.mac)
              IS DISTINCT FROM (NEW.id, NEW.tenant, NEW.username_key, NEW.username_sealed, NEW.role,
               NEW.password_sealed, NEW.created_at, NEW.mac))
        EXECUTE FUNCTION refuse_rebinding();
    CREATE TRIGGER bound_devices BEFORE UPDATE ON devices FOR EACH ROW
        WHEN ((OLD.id, OLD.tenant, OLD.user_id, OLD.name_sealed, OLD.created_at, OLD.full_auth_at, OLD.mac)
              IS DISTINCT FROM (NEW.id, NEW.tenant, NEW.user_id, NEW.name_sealed, NEW.created_at,
               NEW.full_auth_at, NEW.mac))
        EXECUTE FUNCTION refuse_rebinding();
    CREATE TRIGGER bound_refresh_tokens BEFORE UPDATE ON refresh_tokens FOR EACH ROW
        WHEN ((OLD.token_hash, OLD.tenant, OLD.device_id, OLD.issued_at, OLD.mac)
              IS DISTINCT FROM (NEW.token_hash, NEW.tenant, NEW.device_id, NEW.issued_at, NEW.mac))
        EXECUTE FUNCTION refuse_rebinding();
    CREATE TRIGGER bound_idle_limits BEFORE UPDATE ON idle_limits FOR EACH ROW
        WHEN ((OLD.tenant, OLD.role) IS DISTINCT FROM (NEW.tenant, NEW.role))
        EXECUTE FUNCTION refuse_rebinding();",
    // 4: the rest of the records concern. Resources know who last wrote them; their codes
    // are indexed for search; business identifiers (an MRN) only as a keyed hash of the
    // value, beside the system's URI; who is linked to which patient; break-glass grants
    // (the reason sealed), each link and grant with a MAC under the master key, so a row the
    // server did not write grants nothing; idempotency keys (hashed) with their requests;
    // deletions' tombstones, numbered in commit order per tenant; document bytes, each
    // under its own key. Every tenant's writes take its advisory lock (the audit chain's)
    // and stamp `last_updated` from `tenants.written_at`, the database clock kept strictly
    // increasing per tenant: stamps and tombstone numbers then follow commit order on any
    // number of nodes, so a device syncing `_since` what it was told misses nothing.
    // Tombstones and grants are insert-only for the nodes' role. `audit verify` finds every
    // chain (one per tenant, and `-`) through `audit_chains()`, a lookup function like
    // migration 3's: the nodes' role cannot list the trail's tenants itself.
    // Records no known caller made (a failed sign-in, an unknown token) are kept in a chain
    // of their own, tenant `-` (which no tenant id can be): the trail's tables no longer
    // require a tenant row. The trail is searched by patient, user and time: columns the
    // database derives from the chained record itself, so none can be edited apart from it.
    // The columns searches and pages compare hold ASCII stamps, dates, codes and ids, and
    // compare in byte order ("C"), whatever the database's collation: under a linguistic
    // one (en_US, ICU) `2026-01-05T08…` does not sort below `2026-01-05~` and `B1` not
    // below `a1`, so day-precision searches and paging would go wrong.
    "ALTER TABLE resources ALTER COLUMN type TYPE text COLLATE \"C\", ALTER COLUMN id TYPE text COLLATE \"C\",
        ALTER COLUMN last_updated TYPE text COLLATE \"C\", ALTER COLUMN patient TYPE text COLLATE \"C\",
        ALTER COLUMN category TYPE text COLLATE \"C\", ALTER COLUMN effective TYPE text COLLATE \"C\";
    ALTER TABLE resource_names ALTER COLUMN type TYPE text COLLATE \"C\", ALTER COLUMN id TYPE text COLLATE \"C\";
    ALTER TABLE audit_log DROP CONSTRAINT audit_log_tenant_fkey;
    ALTER TABLE audit_checkpoints DROP CONSTRAINT audit_checkpoints_tenant_fkey;
    ALTER TABLE audit_log
        ADD COLUMN patient text COLLATE \"C\" GENERATED ALWAYS AS (record::jsonb #>> '{event,patient}') STORED,
        ADD COLUMN user_id text COLLATE \"C\" GENERATED ALWAYS AS (record::jsonb #>> '{event,user}') STORED,
        ADD COLUMN recorded_at text COLLATE \"C\" GENERATED ALWAYS AS (record::jsonb #>> '{event,recorded_at}') STORED;
    CREATE INDEX audit_by_patient ON audit_log (tenant, patient, seq);
    CREATE INDEX audit_by_user ON audit_log (tenant, user_id, seq);
    ALTER TABLE tenants ADD COLUMN written_at bigint NOT NULL DEFAULT 0;
    ALTER TABLE resources ADD COLUMN written_by text;
    CREATE INDEX resources_by_type ON resources (tenant, type, last_updated, id);
    CREATE TABLE resource_codes (
        tenant  text NOT NULL,
        type    text COLLATE \"C\" NOT NULL,
        id      text COLLATE \"C\" NOT NULL,
        system  text COLLATE \"C\",
        code    text COLLATE \"C\" NOT NULL,
        FOREIGN KEY (tenant, type, id) REFERENCES resources (tenant, type, id) ON DELETE CASCADE
    );
    CREATE INDEX codes_by_code ON resource_codes (tenant, code, type, id);
    CREATE INDEX codes_by_resource ON resource_codes (tenant, type, id);
    CREATE TABLE resource_identifiers (
        tenant     text NOT NULL REFERENCES tenants (id),
        type       text NOT NULL,
        id         text NOT NULL,
        system     text NOT NULL,
        value_key  bytea NOT NULL
    );
    CREATE INDEX identifiers_by_value ON resource_identifiers (tenant, type, value_key, system);
    CREATE INDEX identifiers_by_resource ON resource_identifiers (tenant, type, id);
    CREATE TABLE patient_links (
        tenant    text NOT NULL REFERENCES tenants (id),
        user_id   text NOT NULL REFERENCES users (id),
        patient   text NOT NULL,
        relation  text NOT NULL CHECK (relation IN ('self', 'proxy', 'care-team')),
        mac       bytea NOT NULL,
        PRIMARY KEY (tenant, user_id, patient)
    );
    CREATE TABLE break_glass (
        id             text PRIMARY KEY,
        tenant         text NOT NULL REFERENCES tenants (id),
        user_id        text NOT NULL REFERENCES users (id),
        patient        text NOT NULL,
        reason_sealed  bytea NOT NULL,
        opened_at      bigint NOT NULL,
        expires_at     bigint NOT NULL,
        mac            bytea NOT NULL
    );
    CREATE INDEX break_glass_by_user ON break_glass (tenant, user_id, expires_at);
    CREATE TABLE idempotency (
        tenant        text NOT NULL REFERENCES tenants (id),
        user_id       text NOT NULL,
        key_hash      bytea NOT NULL,
        method        text NOT NULL,
        type          text NOT NULL,
        id            text NOT NULL,
        request_hash  bytea NOT NULL,
        created_at    bigint NOT NULL,
        PRIMARY KEY (tenant, user_id, key_hash)
    );
    CREATE INDEX idempotency_by_age ON idempotency (tenant, created_at);
    CREATE TABLE removed (
        seq         bigserial PRIMARY KEY,
        tenant      text NOT NULL REFERENCES tenants (id),
        type        text COLLATE \"C\" NOT NULL,
        id          text COLLATE \"C\" NOT NULL,
        patient     text COLLATE \"C\",
        removed_at  bigint NOT NULL
    );
    CREATE INDEX removed_by_tenant ON removed (tenant, seq);
    CREATE TABLE documents (
        tenant        text NOT NULL REFERENCES tenants (id),
        id            text NOT NULL,
        patient       text NOT NULL,
        content_type  text NOT NULL,
        wrapped_key   bytea NOT NULL,
        ciphertext    bytea NOT NULL,
        resource_id   text NOT NULL,
        PRIMARY KEY (tenant, id)
    );
    CREATE INDEX documents_by_resource ON documents (tenant, resource_id);
    CREATE TABLE admin_alerts (
        id         text PRIMARY KEY,
        tenant     text NOT NULL REFERENCES tenants (id),
        kind       text NOT NULL,
        user_id    text NOT NULL REFERENCES users (id),
        raised_at  bigint NOT NULL
    );
    CREATE INDEX admin_alerts_by_tenant ON admin_alerts (tenant, raised_at);
    CREATE TABLE exports (
        id           text PRIMARY KEY,
        tenant       text NOT NULL REFERENCES tenants (id),
        user_id      text NOT NULL REFERENCES users (id),
        request      text NOT NULL,
        status       text NOT NULL,
        created_at   bigint NOT NULL,
        finished_at  text
    );
    CREATE INDEX exports_by_age ON exports (tenant, created_at);
    CREATE TABLE export_files (
        tenant       text NOT NULL REFERENCES tenants (id),
        export_id    text NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
        n            bigint NOT NULL,
        type         text NOT NULL,
        count        bigint NOT NULL,
        patients     text NOT NULL,
        wrapped_key  bytea NOT NULL,
        ciphertext   bytea NOT NULL,
        PRIMARY KEY (export_id, n)
    );
    CREATE TABLE device_audit_tips (
        tenant   text NOT NULL REFERENCES tenants (id),
        user_id  text NOT NULL,
        stream   text NOT NULL,
        tip      text NOT NULL,
        PRIMARY KEY (tenant, user_id, stream, tip)
    );
    DO $$ DECLARE t text; BEGIN
        FOREACH t IN ARRAY ARRAY['resource_codes', 'resource_identifiers', 'patient_links', 'break_glass',
                                 'idempotency', 'removed', 'documents', 'device_audit_tips', 'admin_alerts',
                                 'exports', 'export_files'] LOOP
            EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
            EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
            EXECUTE format('CREATE POLICY one_tenant ON %I USING (tenant = current_setting(''carekeep.tenant'', true))
                            WITH CHECK (tenant = current_setting(''carekeep.tenant'', true))', t);
        END LOOP;
    END $$;
    GRANT SELECT, INSERT, DELETE ON resource_codes, resource_identifiers, documents, idempotency, device_audit_tips
        TO carekeep_app;
    GRANT SELECT, INSERT, UPDATE, DELETE ON patient_links TO carekeep_app;
    GRANT SELECT, INSERT ON break_glass, removed, admin_alerts TO carekeep_app;
    GRANT SELECT, INSERT, UPDATE, DELETE ON exports TO carekeep_app;
    GRANT SELECT, INSERT, DELETE ON export_files TO carekeep_app;
    GRANT USAGE ON SEQUENCE removed_seq_seq TO carekeep_app;
    CREATE POLICY lookup ON audit_log FOR SELECT TO carekeep_lookup USING (true);
    GRANT SELECT (tenant) ON audit_log TO carekeep_lookup;
    CREATE FUNCTION audit_chains() RETURNS SETOF text
        LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
        AS 'SELECT DISTINCT tenant FROM public.audit_log';
    REVOKE ALL ON FUNCTION audit_chains() FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION audit_chains() TO carekeep_app;
    GRANT carekeep_lookup TO CURRENT_USER;
    GRANT CREATE ON SCHEMA public TO carekeep_lookup;
    ALTER FUNCTION audit_chains() OWNER TO carekeep_lookup;
    REVOKE CREATE ON SCHEMA public FROM carekeep_lookup;
    REVOKE carekeep_lookup FROM CURRENT_USER;
    CREATE TRIGGER bound_tenants BEFORE UPDATE ON tenants FOR EACH ROW
        WHEN ((OLD.id, OLD.wrapped_key) IS DISTINCT FROM (NEW.id, NEW.wrapped_key) OR NEW.written_at < OLD.written_at)
        EXECUTE FUNCTION refuse_rebinding();",
];

/// Refuses a database whose schema is not this release's: older (run `migrate` as the
/// owner first) or newer (this server is older than the deployment).
pub async fn check_version(client: &Client) -> Result<(), ServerError> {
    let found: i64 = client
        .query_one("SELECT coalesce(max(version), 0)::bigint FROM schema_version", &[])
        .await
        .map_err(|_| {
            ServerError::Store(
                "the database has no Carekeep schema: run `init --database` or `migrate` as its owner".into(),
            )
        })?
        .get(0);
    let version = i64::try_from(VERSION).unwrap_or(i64::MAX);
    match found.cmp(&version) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(ServerError::Store(format!(
            "the database's schema is at version {found}, this server needs {version}: run `carekeep-server migrate` as its owner"
        ))),
        std::cmp::Ordering::Greater => Err(ServerError::Store(format!(
            "the database's schema is at version {found}, newer than this server's {version}: upgrade the server"
        ))),
    }
}

/// Brings the database's schema up to date; returns the version it had before. Run as the
/// role that owns the tables (it needs CREATEROLE once, to make [`APP_ROLE`]).
pub async fn migrate(client: &mut Client) -> Result<i64, ServerError> {
    let tx = client.transaction().await.map_err(failed)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(failed)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY)")
        .await
        .map_err(failed)?;
    let found: i64 = tx
        .query_one("SELECT coalesce(max(version), 0)::bigint FROM schema_version", &[])
        .await
        .map_err(failed)?
        .get(0);
    for (version, sql) in (1_i64..).zip(MIGRATIONS).filter(|(version, _)| *version > found) {
        tx.batch_execute(sql).await.map_err(failed)?;
        let version = i32::try_from(version).unwrap_or(i32::MAX);
        tx.execute("INSERT INTO schema_version (version) VALUES ($1)", &[&version])
            .await
            .map_err(failed)?;
    }
    tx.commit().await.map_err(failed)?;
    Ok(found)
}
