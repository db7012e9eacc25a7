-- Conclave chat schema, version 7: XEP-0191 blocklists (docs/chat.md
-- "Blocking").
--
-- Written by the nginx module through ngx_xmpp_db.c
-- (ngx_xmpp_blocking.c): one row per (owner, blocked JID).  owner_jid
-- is a bare JID, jid the item as the user gave it after normalization
-- (a full JID, a bare JID, a domain, or domain/resource; at most 512
-- bytes, so that the primary key fits InnoDB's 3072-byte limit).  Each
-- session reads its user's rows once, when it is bound, and keeps them;
-- <block/> and <unblock/> change the rows and then every session.
CREATE TABLE IF NOT EXISTS blocklist (
    owner_jid    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                 NOT NULL,
    jid          VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                 NOT NULL,
    created_at   DATETIME(6) NOT NULL,
    PRIMARY KEY (owner_jid, jid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
