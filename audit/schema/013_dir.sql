-- Conclave schema 013: the vCard fields users set themselves (issue 6.4,
-- docs/directory.md), written by ngx_xmpp_avatar.c through
-- ngx_xmpp_db.c.  The directory owns the fields it maps (FN, N, TITLE,
-- ORG, EMAIL, TEL, PHOTO); everything else a user puts in their vCard
-- (NICKNAME unless mapped, URL, BDAY, DESC, ...) is kept here as the
-- vcard-temp elements, serialized, at most conclave_vcard_max_size
-- bytes.  A user's own avatar lives in their XEP-0084 PEP nodes
-- (008_pep.sql), not here.  Safe to repeat.
CREATE TABLE IF NOT EXISTS user_vcard (
    owner_jid     VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin
                  NOT NULL,
    fields        MEDIUMBLOB NOT NULL,
    updated_at    DATETIME(6) NOT NULL,
    PRIMARY KEY (owner_jid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
