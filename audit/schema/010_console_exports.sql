-- Conclave schema, version 10: the console's export jobs
-- (docs/console.md "Exports").
--
-- One row per export started in the console.  The worker that starts a
-- job writes its node, its own pid and the master's pid; the job's
-- thread moves the row from "running" to "done" or "failed" and keeps
-- done/total (records) up to date while it runs.  A row still "running"
-- whose worker is gone or whose master is not the running one (a
-- restart, a crash) is marked "failed" by the next listing: a job is
-- never shown as running when nothing runs it.  The zip lives in
-- conclave_admin_export_dir/<id>/<file>; the id is 16 random hex
-- digits, the only part of a download request that names a file.
CREATE TABLE IF NOT EXISTS console_export (
    id           CHAR(16) CHARACTER SET ascii NOT NULL PRIMARY KEY,
    actor        VARCHAR(320) NOT NULL,
    format       VARCHAR(16) NOT NULL,
    params       TEXT NOT NULL,
    state        VARCHAR(8) NOT NULL,
    node         VARCHAR(64) NOT NULL,
    pid          INT UNSIGNED NOT NULL,
    master_pid   INT UNSIGNED NOT NULL,
    done         BIGINT UNSIGNED NOT NULL DEFAULT 0,
    total        BIGINT UNSIGNED NOT NULL DEFAULT 0,
    size         BIGINT UNSIGNED NOT NULL DEFAULT 0,
    file         VARCHAR(255) NULL,
    error        VARCHAR(512) NULL,
    created_us   BIGINT NOT NULL,
    finished_us  BIGINT NULL,
    KEY console_export_created (created_us),
    KEY console_export_state (state, node)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
