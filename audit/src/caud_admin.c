
/*
 * The admin journal (caud_comply.h, docs/compliance.md "Who did what"):
 * records of people's actions on the appliance, in the same journal
 * format, chain and checkpoints as the workers' records.  One writer
 * at a time holds a journal (its flock); conclavectl processes and the
 * console take turns.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "caud_comply.h"


#define CAUD_ADMIN_WAIT_MS  10000


static int
caud_admin_open(const caud_admin_t *adm, caud_journal_t **j, char *err,
    size_t errlen)
{
    int                   waited;
    struct timespec       ts;
    caud_journal_opts_t   jo;

    memset(&jo, 0, sizeof(jo));

    for (waited = 0; ; waited += 50) {
        if (caud_journal_open(adm->dir, CAUD_ADMIN_WRITER, &jo, j, err,
                              errlen) == 0)
        {
            return 0;
        }

        /* another admin writer holds it: wait our turn */
        if (strstr(err, "another writer has it") == NULL
            || waited >= CAUD_ADMIN_WAIT_MS)
        {
            return -1;
        }

        ts.tv_sec = 0;
        ts.tv_nsec = 50 * 1000000;
        nanosleep(&ts, NULL);
    }
}


/* a checkpoint over the whole admin journal, so nothing in it waits */
static int
caud_admin_checkpoint(const caud_admin_t *adm, caud_journal_t *j,
    char *err, size_t errlen)
{
    int                 rc;
    char                note[CAUD_NOTE_MAX];
    size_t              len;
    caud_signer_t      *s;
    caud_checkpoint_t   cp;

    s = caud_signer_load(adm->key, adm->origin_prefix, err, errlen);
    if (s == NULL) {
        return -1;
    }

    memset(&cp, 0, sizeof(cp));
    snprintf(cp.origin, sizeof(cp.origin), "%s/%u", adm->origin_prefix,
             CAUD_ADMIN_WRITER);
    cp.size = caud_journal_last_seq(j);
    memcpy(cp.root, caud_journal_head(j), CAUD_HASH_LEN);

    rc = caud_checkpoint_sign(s, &cp, note, sizeof(note), &len);
    caud_signer_free(s);

    if (rc != 0) {
        snprintf(err, errlen, "signing the admin checkpoint: %s",
                 strerror(errno));
        return -1;
    }

    return caud_checkpoint_store(adm->dir, CAUD_ADMIN_WRITER, cp.size, note,
                                 len, err, errlen);
}


int
caud_admin_record(const caud_admin_t *adm, json_t *rec, uint64_t *seq,
    char *err, size_t errlen)
{
    char             e2[512];
    int64_t          got;
    uint64_t         s;
    caud_journal_t  *j;
    caud_shipper_t  *sh;

    if (caud_admin_open(adm, &j, err, errlen) != 0) {
        return -1;
    }

    if (caud_journal_append(j, rec, &s) != 0) {
        snprintf(err, errlen, "admin journal: append: %s", strerror(errno));
        caud_journal_close(j, e2, sizeof(e2));
        return -1;
    }

    /* durable before the checkpoint that covers it is written */
    if (caud_journal_sync(j, err, errlen) != 0
        || caud_admin_checkpoint(adm, j, err, errlen) != 0)
    {
        caud_journal_close(j, e2, sizeof(e2));
        return -1;
    }

    if (caud_journal_close(j, err, errlen) != 0) {
        return -1;
    }

    if (seq) {
        *seq = s;
    }

    if (adm->db == NULL) {
        return 0;
    }

    /* into MariaDB now; a worker's shipper would take it within 5 s */
    sh = caud_shipper_new(adm->db, adm->dir, adm->node, 1000, err, errlen);
    if (sh == NULL) {
        return -1;
    }

    got = caud_shipper_ship(sh, CAUD_ADMIN_WRITER, 0, err, errlen);
    caud_shipper_free(sh);

    return got < 0 ? -1 : 0;
}
