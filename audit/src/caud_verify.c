
/*
 * verify: the auditor's check of everything the audit pipeline stored
 * (DESIGN.md "The audit record is the product's spine", COMPLIANCE.md 3
 * and 7.2).
 *
 * Two stores, each checked on its own, and against each other:
 *
 *   the journal directory  every writer's segments read from seq 1 (CRC,
 *                          seq continuity, the chain from the genesis),
 *                          and every checkpoint file beside them
 *                          (signature, origin, root = entry_hash of
 *                          record <size>, journal not shorter)
 *
 *   MariaDB                every writer's rows streamed in seq order:
 *                          entry_hash against payload and prev_hash, the
 *                          payload's own seq, the links between rows,
 *                          gapless seqs up to audit_journal.shipped_seq,
 *                          head_hash, the columns copied out of the
 *                          payload, and the stored checkpoints
 *
 * Where the same writer's journal is in the directory it is a second
 * witness: every row's bytes must equal the journal record's.
 *
 * A finding is one line, "journal <node>/<writer> seq N: <what>
 * (<detail>)", what being changed, deleted, inserted, reordered,
 * truncated or bad signature (docs/audit-verify.md).  A row is named by
 * what it holds, not by what is around it: a moved row is one that is
 * self-consistent (entry_hash matches payload and prev_hash) but whose
 * payload carries another seq; an altered row is one whose entry_hash
 * does not match, or that differs from the journal, or whose successor
 * does not link to it after it was re-hashed.  After a finding the next
 * row's link is not checked: a deleted or moved row breaks the link of
 * the row after it, and that row is not at fault.
 */


#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "caud.h"
#include "caud_verify_int.h"


#define CAUD_V_MAX_WRITERS  65536


/* ------------------------------------------------------------------ */
/* the report */

void
caud_verrf(caud_verify_t *v, const char *fmt, ...)
{
    va_list  ap;

    if (v->err == NULL || v->errlen == 0) {
        return;
    }

    va_start(ap, fmt);
    vsnprintf(v->err, v->errlen, fmt, ap);
    va_end(ap);
}


/* "journal <node>/<writer>" and what follows (" seq N: ...", ": ..."):
 * at most CAUD_V_MAX_LINES lines a journal, every finding counted */
void
caud_vfind(caud_verify_t *v, const char *fmt, ...)
{
    va_list  ap;

    v->findings++;

    if (v->lines++ >= CAUD_V_MAX_LINES || v->out == NULL) {
        return;
    }

    fprintf(v->out, "journal %s/%" PRIu32, v->node, v->writer);

    va_start(ap, fmt);
    vfprintf(v->out, fmt, ap);
    va_end(ap);

    fputc('\n', v->out);
}


void
caud_vjournal_begin(caud_verify_t *v, uint32_t writer)
{
    v->writer = writer;
    v->lines = 0;
}


void
caud_vjournal_end(caud_verify_t *v)
{
    if (v->lines > CAUD_V_MAX_LINES && v->out) {
        fprintf(v->out, "journal %s/%" PRIu32 ": %" PRIu64 " more findings "
                "not shown\n", v->node, v->writer,
                v->lines - CAUD_V_MAX_LINES);
    }
}


/* one line for seqs from..to, both included */
void
caud_vfind_range(caud_verify_t *v, uint64_t from, uint64_t to,
    const char *what, const char *detail)
{
    if (from == to) {
        caud_vfind(v, " seq %" PRIu64 ": %s (%s)", from, what, detail);

    } else {
        caud_vfind(v, " seqs %" PRIu64 "..%" PRIu64 ": %s (%s)", from, to,
                   what, detail);
    }
}


static void
caud_vhex(char *buf, const uint8_t *h)
{
    int  i;

    for (i = 0; i < 8; i++) {
        sprintf(buf + 2 * i, "%02x", h[i]);
    }
}


/* ------------------------------------------------------------------ */
/* checkpoint notes */

static int
caud_vorigin(caud_verify_t *v, uint32_t writer, char *buf, size_t size)
{
    int  n;

    n = snprintf(buf, size, "%s/%" PRIu32, v->o->origin_prefix, writer);

    return (n < 0 || (size_t) n >= size) ? -1 : 0;
}


/*
 * Checks one note stored as checkpoint <size> (a file name or a row
 * key): 1 valid, 0 a finding was reported.
 */
int
caud_vnote(caud_verify_t *v, uint64_t size, const char *note, size_t len,
    const char *where, caud_vcp_t *cp)
{
    char               origin[CAUD_ORIGIN_MAX], e[320];
    caud_checkpoint_t  c;

    cp->size = size;
    cp->valid = 0;

    if (caud_vorigin(v, v->writer, origin, sizeof(origin)) != 0) {
        caud_vfind(v, " checkpoint %" PRIu64 ": bad signature (%s: origin "
                   "prefix too long)", size, where);
        return 0;
    }

    if (caud_checkpoint_verify(v->vkey, note, len, NULL, &c, e, sizeof(e))
        != 0)
    {
        caud_vfind(v, " checkpoint %" PRIu64 ": bad signature (%s: %s)",
                   size, where, e);
        return 0;
    }

    if (strcmp(c.origin, origin) != 0) {
        caud_vfind(v, " checkpoint %" PRIu64 ": bad signature (%s: origin "
                   "\"%s\", expected \"%s\")", size, where, c.origin,
                   origin);
        return 0;
    }

    if (c.size != size) {
        caud_vfind(v, " checkpoint %" PRIu64 ": changed (%s: the note "
                   "covers %" PRIu64 " records)", size, where, c.size);
        return 0;
    }

    memcpy(cp->root, c.root, CAUD_HASH_LEN);
    cp->valid = 1;

    return 1;
}


/* the root of a valid checkpoint against the entry_hash of its record */
void
caud_vcp_root(caud_verify_t *v, const caud_vcp_t *cp, const uint8_t *entry,
    const char *store)
{
    char  a[17], b[17];

    if (!cp->valid || memcmp(cp->root, entry, CAUD_HASH_LEN) == 0) {
        return;
    }

    caud_vhex(a, cp->root);
    caud_vhex(b, entry);

    caud_vfind(v, " checkpoint %" PRIu64 ": changed (%s: root %s... is not "
               "the entry_hash %s... of seq %" PRIu64 ")", cp->size, store,
               a, b, cp->size);
}


/* ------------------------------------------------------------------ */
/* the journal directory */

static int
caud_vread_note(const char *path, char *buf, size_t size, size_t *len)
{
    FILE    *f;
    size_t   n;

    f = fopen(path, "re");
    if (f == NULL) {
        return -1;
    }

    n = fread(buf, 1, size, f);
    if (ferror(f)) {
        fclose(f);
        return -1;
    }

    fclose(f);
    *len = n;

    return 0;
}


static int
caud_vfile_cps(caud_verify_t *v, uint32_t writer, caud_vcp_t **out,
    size_t *nout)
{
    char         path[4096], note[CAUD_NOTE_MAX + 2];
    size_t       i, n, len;
    uint64_t    *sizes;
    caud_vcp_t  *cps;

    if (caud_checkpoint_list(v->o->dir, writer, &sizes, &n) != 0) {
        caud_verrf(v, "%s: %s", v->o->dir, strerror(errno));
        return -1;
    }

    cps = calloc(n ? n : 1, sizeof(caud_vcp_t));
    if (cps == NULL) {
        free(sizes);
        caud_verrf(v, "out of memory");
        return -1;
    }

    for (i = 0; i < n; i++) {
        if (caud_checkpoint_path(path, sizeof(path), v->o->dir, writer,
                                 sizes[i]) != 0
            || caud_vread_note(path, note, sizeof(note), &len) != 0)
        {
            caud_verrf(v, "%s: %s", path, strerror(errno));
            free(sizes);
            free(cps);
            return -1;
        }

        (void) caud_vnote(v, sizes[i], note, len, strrchr(path, '/') + 1,
                          &cps[i]);
    }

    v->files.checkpoints += n;
    free(sizes);
    *out = cps;
    *nout = n;

    return 0;
}


/* the lowest first seq of writer's segments, 0 if it has none */
int
caud_vfirst_seq(const char *dir, uint32_t writer, uint64_t *first)
{
    DIR                *d;
    char                prefix[64], *end;
    size_t              plen;
    struct dirent      *de;
    unsigned long long  s;

    d = opendir(dir);
    if (d == NULL) {
        return -1;
    }

    plen = snprintf(prefix, sizeof(prefix), "journal-%" PRIu32 "-", writer);
    *first = 0;

    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, plen) != 0) {
            continue;
        }

        errno = 0;
        s = strtoull(de->d_name + plen, &end, 10);
        if (errno || s == 0 || strcmp(end, ".cj") != 0
            || strlen(de->d_name + plen) != 23)
        {
            continue;
        }

        if (*first == 0 || s < *first) {
            *first = s;
        }
    }

    closedir(d);

    return 0;
}


/*
 * A reader error names the file, offset and seq ("<file> offset O seq
 * S: what").  The reader stops at the first damage, so the kind comes
 * from what it says: a seq jump is a deletion, a seq going back a
 * reorder, anything else (CRC, header, hash, link) a change.
 */
static void
caud_vreader_finding(caud_verify_t *v, caud_reader_t *r)
{
    const char          *e, *p;
    unsigned long long   seq, want;

    e = caud_reader_error(r);

    p = strstr(e, " seq ");
    if (p == NULL || sscanf(p, " seq %llu", &seq) != 1) {
        caud_vfind(v, ": %s (%s)", strstr(e, "segments missing")
                   ? "deleted" : "changed", e);
        return;
    }

    p = strstr(e, "expected seq ");
    if (p && sscanf(p, "expected seq %llu", &want) == 1) {
        if (seq > want) {
            caud_vfind_range(v, want, seq - 1, "deleted", e);

        } else {
            caud_vfind(v, " seq %llu: reordered (%s)", want, e);
        }

        return;
    }

    caud_vfind(v, " seq %llu: %s (%s)", seq,
               strstr(e, "segments missing") ? "deleted" : "changed", e);
}


/* reads writer's journal from its first record; *last: the last seq */
static int
caud_vfile_read(caud_verify_t *v, uint32_t writer, caud_vcp_t *cps,
    size_t ncps, uint64_t *last, int *broken)
{
    int             rc;
    char            e[512];
    size_t          k;
    uint64_t        first;
    caud_frame_t    f;
    caud_reader_t  *r;

    *last = 0;
    *broken = 0;

    if (caud_vfirst_seq(v->o->dir, writer, &first) != 0) {
        caud_verrf(v, "%s: %s", v->o->dir, strerror(errno));
        return -1;
    }

    if (first > 1) {
        /* retention tombstones will make this legitimate; until then
         * the head of the journal is gone */
        caud_vfind_range(v, 1, first - 1, "deleted",
                         "the first segment starts later");
        *last = first - 1;
    }

    if (caud_reader_open(v->o->dir, writer, first, &r, e, sizeof(e)) != 0) {
        caud_verrf(v, "%s", e);
        return -1;
    }

    k = 0;

    while ((rc = caud_reader_next(r, &f)) == 1) {
        v->files.records++;
        *last = f.seq;

        while (k < ncps && cps[k].size < f.seq) {
            k++;
        }

        if (k < ncps && cps[k].size == f.seq) {
            caud_vcp_root(v, &cps[k], f.entry_hash, f.file);
        }
    }

    if (rc < 0) {
        caud_vreader_finding(v, r);
        *broken = 1;
    }

    caud_reader_close(r);

    return 0;
}


static int
caud_vfile_journal(caud_verify_t *v, uint32_t writer)
{
    int          broken;
    size_t       i, ncps;
    uint64_t     last;
    caud_vcp_t  *cps;

    caud_vjournal_begin(v, writer);
    v->files.journals++;

    if (caud_vfile_cps(v, writer, &cps, &ncps) != 0) {
        return -1;
    }

    if (caud_vfile_read(v, writer, cps, ncps, &last, &broken) != 0) {
        free(cps);
        return -1;
    }

    /* a damaged journal was reported where it broke; past that point
     * nothing can be said about its length */
    for (i = ncps; !broken && i > 0; i--) {
        if (cps[i - 1].valid && cps[i - 1].size > last) {
            caud_vfind(v, " truncated: last seq %" PRIu64 " < checkpoint %"
                       PRIu64 " (records %" PRIu64 "..%" PRIu64 " gone)",
                       last, cps[i - 1].size, last + 1, cps[i - 1].size);
            break;
        }
    }

    free(cps);
    caud_vjournal_end(v);

    return 0;
}


static int
caud_vfiles(caud_verify_t *v)
{
    size_t     i, n;
    uint32_t  *ids;

    ids = malloc(CAUD_V_MAX_WRITERS * sizeof(uint32_t));
    if (ids == NULL) {
        caud_verrf(v, "out of memory");
        return -1;
    }

    if (caud_journal_list(v->o->dir, ids, CAUD_V_MAX_WRITERS, &n) != 0) {
        caud_verrf(v, "%s: %s", v->o->dir, strerror(errno));
        free(ids);
        return -1;
    }

    for (i = 0; i < n; i++) {
        if (caud_vfile_journal(v, ids[i]) != 0) {
            free(ids);
            return -1;
        }
    }

    free(ids);

    if (v->out) {
        fprintf(v->out, "journals in %s: %" PRIu64 " journals, %" PRIu64
                " records, %" PRIu64 " checkpoints\n", v->o->dir,
                v->files.journals, v->files.records, v->files.checkpoints);
    }

    return 0;
}


/* ------------------------------------------------------------------ */

int
caud_verify(const caud_verify_opts_t *o, char *err, size_t errlen)
{
    int             rc;
    caud_verify_t   v;
    caud_vcount_t   t;

    memset(&v, 0, sizeof(v));
    v.o = o;
    v.out = o->out;
    v.err = err;
    v.errlen = errlen;
    v.node = o->node ? o->node : "local";
    rc = -1;

    if (o->vkey == NULL || o->origin_prefix == NULL
        || (o->db && o->node == NULL))
    {
        caud_verrf(&v, "verify: vkey, origin_prefix and (for MariaDB) node "
                   "are required");
        return -1;
    }

    v.vkey = caud_verifier_new(o->vkey, err, errlen);
    if (v.vkey == NULL) {
        return -1;
    }

    v.hasher = caud_hasher_new();
    if (v.hasher == NULL) {
        caud_verrf(&v, "out of memory");
        goto fail;
    }

    if ((o->dir && caud_vfiles(&v) != 0) || (o->db && caud_vdb(&v) != 0)) {
        goto fail;
    }

    t.journals = v.files.journals + v.db.journals;
    t.records = v.files.records + v.db.records;
    t.checkpoints = v.files.checkpoints + v.db.checkpoints;

    if (v.out) {
        fprintf(v.out, "verify: %" PRIu64 " journals, %" PRIu64 " records, %"
                PRIu64 " checkpoints: ", t.journals, t.records,
                t.checkpoints);

        if (v.findings) {
            fprintf(v.out, "%" PRIu64 " findings\n", v.findings);

        } else {
            fprintf(v.out, "OK\n");
        }

        fflush(v.out);
    }

    rc = v.findings ? 1 : 0;

fail:

    caud_buf_free(&v.colbuf);
    caud_hasher_free(v.hasher);
    caud_verifier_free(v.vkey);

    return rc;
}
