-- Conclave schema 008: personal eventing (XEP-0163 PEP) and private
-- XML storage (XEP-0049), written by ngx_xmpp_pep.c and
-- ngx_xmpp_private.c through ngx_xmpp_db.c (docs/pep.md).  Every
-- statement is safe to repeat.  JIDs are bare JIDs, lower-cased by the
-- module and compared byte for byte (utf8mb4_bin), as in 002_chat.sql.

-- One row per PEP node of an account (XEP-0060 section 8.2 options the
-- server supports).  max_items 0 means the server maximum
-- (conclave_pep_max_items, XEP-0060 "max").
CREATE TABLE IF NOT EXISTS pep_node (
    owner_jid     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                  NOT NULL,
    node          VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                  NOT NULL,
    access_model  VARCHAR(16) NOT NULL DEFAULT 'presence',
    persist_items TINYINT NOT NULL DEFAULT 1,
    max_items     INT UNSIGNED NOT NULL DEFAULT 1,
    send_last     VARCHAR(24) NOT NULL DEFAULT 'on_sub_and_presence',
    created_at    DATETIME(6) NOT NULL,
    PRIMARY KEY (owner_jid, node)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The items of a node, each payload as the XML sent to clients.  seq
-- orders them by publication (a republished id moves to the end); the
-- oldest go first when max_items is reached (XEP-0060 7.1.3.6).
CREATE TABLE IF NOT EXISTS pep_item (
    owner_jid     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                  NOT NULL,
    node          VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                  NOT NULL,
    item_id       VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                  NOT NULL,
    seq           BIGINT UNSIGNED NOT NULL,
    published_at  DATETIME(6) NOT NULL,
    payload       MEDIUMBLOB NOT NULL,
    PRIMARY KEY (owner_jid, node, item_id),
    KEY pep_item_seq (owner_jid, node, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- XEP-0049 private XML storage: one element per (account, namespace).
-- storage:bookmarks is never stored here: XEP-0402 section 5.3 maps it
-- to the urn:xmpp:bookmarks:1 PEP node above.
CREATE TABLE IF NOT EXISTS private_storage (
    owner_jid     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                  NOT NULL,
    ns            VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                  NOT NULL,
    payload       MEDIUMBLOB NOT NULL,
    updated_at    DATETIME(6) NOT NULL,
    PRIMARY KEY (owner_jid, ns)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
