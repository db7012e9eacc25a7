-- Conclave schema: persistent group chat rooms (XEP-0045), docs/muc.md.
--
-- Written by the module's room owner through ngx_xmpp_db.c
-- (ngx_xmpp_mucadmin.c): one row per persistent room, replaced whole on
-- every change of its configuration, affiliations or subject, deleted
-- when the room is destroyed or made temporary.  What was said in a room
-- is not here: it is in audit_record (events muc_*, peer = the room's
-- JID), the one source of truth for history, MAM and exports.
--
-- config        JSON object: name, desc, password, persistent,
--               members_only, semi_anonymous, moderated, public,
--               change_subject, allow_invites, max_users
-- affiliations  JSON object: bare JID -> "owner"|"admin"|"member"|"outcast"

CREATE TABLE IF NOT EXISTS muc_room (
    jid           VARCHAR(512) NOT NULL PRIMARY KEY,
    config        TEXT NOT NULL,
    affiliations  MEDIUMTEXT NOT NULL,
    subject       TEXT NULL,
    subject_from  VARCHAR(1024) NULL,
    updated_at    DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
