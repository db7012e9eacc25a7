-- Conclave chat schema, version 2 (docs/chat.md "What is stored where").
--
-- Written by the nginx module through ngx_xmpp_db.c: rosters and
-- subscription states (ngx_xmpp_roster.c), offline messages
-- (ngx_xmpp_offline.c).  Every statement is safe to repeat (IF NOT
-- EXISTS).  JIDs are bare JIDs, compared byte for byte (utf8mb4_bin):
-- the module lower-cases domain and localpart before they get here.

-- One row per (owner, contact): the owner's roster item and the
-- subscription state of RFC 6121 Appendix A as four flags.  listed = 0
-- is a contact that only asked to subscribe (pending-in, section 3.1.3),
-- which is not a roster item until the owner answers.  groups_xml holds
-- the item's <group/> elements already escaped, as sent to clients.
CREATE TABLE IF NOT EXISTS roster_item (
    owner_jid    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                 NOT NULL,
    contact_jid  VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                 NOT NULL,
    name         VARCHAR(255) NULL,
    groups_xml   TEXT NULL,
    sub_to       TINYINT NOT NULL DEFAULT 0,
    sub_from     TINYINT NOT NULL DEFAULT 0,
    ask_out      TINYINT NOT NULL DEFAULT 0,
    pending_in   TINYINT NOT NULL DEFAULT 0,
    listed       TINYINT NOT NULL DEFAULT 0,
    ver          BIGINT UNSIGNED NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_jid, contact_jid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The roster version of RFC 6121 2.6: one counter per owner, raised by
-- every change of that owner's roster_item rows.
CREATE TABLE IF NOT EXISTS roster_version (
    owner_jid    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                 NOT NULL PRIMARY KEY,
    ver          BIGINT UNSIGNED NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Messages for a user with no available resource (XEP-0160), each the
-- stanza as it will be delivered (its XEP-0203 <delay/> included).  The
-- audit record of the message is written before the row, and stays the
-- only record of it: a row is deleted once delivered.  A session claims
-- rows (claim, claimed_at) before it sends them, so that two sessions on
-- different workers never both deliver one; a claim older than a minute
-- belongs to a session or worker that died and may be taken again.  ord
-- is the order of arrival (milliseconds since the epoch times 1000, and
-- a counter), taken on the event loop: the inserts themselves run in
-- several threads and may commit in another order.
CREATE TABLE IF NOT EXISTS offline_message (
    id           BIGINT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
    owner_jid    VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                 NOT NULL,
    ord          BIGINT UNSIGNED NOT NULL,
    stored_at    DATETIME(6) NOT NULL,
    stanza       MEDIUMBLOB NOT NULL,
    claim        VARCHAR(64) NULL,
    claimed_at   DATETIME(6) NULL,
    KEY offline_owner (owner_jid, ord),
    KEY offline_claim (claim)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Accounts that have been available at least once.  Only they get
-- offline storage: a message to a JID of ours that never signed in is
-- refused with <service-unavailable/> (RFC 6121 8.5.2.2.1) rather than
-- kept for a mailbox that may not exist.
CREATE TABLE IF NOT EXISTS chat_user (
    jid          VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                 NOT NULL PRIMARY KEY,
    first_seen   DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
