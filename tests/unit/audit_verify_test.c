
/*
 * Unit tests for audit/src/caud_verify.c, the journal directory half
 * (MariaDB is tests/integration/test_audit_verify.py): a clean
 * directory passes; every bit of a sealed segment, of the live segment
 * and of a checkpoint note flipped in turn fails (the systemd
 * test-journal-verify pattern, COMPLIANCE.md 3); a tail cut below the
 * last checkpoint is "truncated"; checkpoints re-signed with another
 * key are "bad signature" (the CVE-2023-31439 case); a checkpoint whose
 * root was altered and re-signed with the right key fails; a missing
 * segment is "deleted"; a torn tail past the last checkpoint is not a
 * finding.
 */


#define _GNU_SOURCE

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caud.h"
#include "unit.h"
#include "unit_files.h"


#define PREFIX   "conclave.example.com/audit/n1"
#define NREC     12
#define SEGSIZE  1600          /* 3 frames of ~500 bytes a segment */


/* ------------------------------------------------------------------ */
/* helpers */

static json_t *
msg_record(int i)
{
    char           id[32], body[64];
    json_t        *rec;
    caud_actor_t   a = {
        "alice@example.com", "uid=alice,ou=people,dc=example,dc=com",
        "s-4f1c9a", "192.0.2.10", "websocket", "converse.js"
    };

    memset(body, 'a' + i % 26, 60);
    body[60] = '\0';
    snprintf(id, sizeof(id), "m-%d", i);

    rec = caud_record_new("message", CAUD_SUCCESS, 1700000000000000 + i);
    if (rec == NULL
        || caud_record_set_actor(rec, &a) != 0
        || caud_record_set_object(rec, "chat", id) != 0
        || caud_record_set_param(rec, "to", json_string("bob@example.com"))
        || caud_record_set_param_str(rec, "body", body, 60))
    {
        json_decref(rec);
        return NULL;
    }

    return rec;
}


/* signs (origin, size, root) with s and stores it as checkpoint size */
static int
store_cp(caud_signer_t *s, const char *dir, unsigned writer,
    const char *origin, uint64_t size, const uint8_t *root)
{
    char               note[CAUD_NOTE_MAX], err[256];
    size_t             len;
    caud_checkpoint_t  cp;

    memset(&cp, 0, sizeof(cp));
    snprintf(cp.origin, sizeof(cp.origin), "%s", origin);
    cp.size = size;
    memcpy(cp.root, root, CAUD_HASH_LEN);

    if (caud_checkpoint_sign(s, &cp, note, sizeof(note), &len) != 0
        || caud_checkpoint_store(dir, writer, size, note, len, err,
                                 sizeof(err)) != 0)
    {
        return -1;
    }

    return 0;
}


typedef struct {
    char            base[256];
    char            dir[512];
    char            key[512];
    char            vkey[CAUD_VKEY_MAX];
    caud_signer_t  *signer;
    uint8_t         heads[NREC + 1][CAUD_HASH_LEN];
} fixture_t;


/*
 * Writer w: NREC records in SEGSIZE segments (first seqs 1, 4, 7, 10),
 * checkpoints at 4, 8 and 12.
 */
static int
make_journal(fixture_t *fx, unsigned w, int n)
{
    int                   i, rc;
    char                  err[512], origin[CAUD_ORIGIN_MAX];
    json_t               *rec;
    uint64_t              seq;
    caud_journal_t       *j;
    caud_journal_opts_t   o = { SEGSIZE, 1, 0 };

    if (caud_journal_open(fx->dir, w, &o, &j, err, sizeof(err)) != 0) {
        printf("  open: %s\n", err);
        return -1;
    }

    snprintf(origin, sizeof(origin), "%s/%u", PREFIX, w);
    rc = 0;

    for (i = 1; rc == 0 && i <= n; i++) {
        rec = msg_record(i);
        rc = (rec == NULL || caud_journal_append(j, rec, &seq) != 0) ? -1 : 0;
        json_decref(rec);

        if (rc == 0) {
            memcpy(fx->heads[i], caud_journal_head(j), CAUD_HASH_LEN);
        }

        if (rc == 0 && i % 4 == 0) {
            rc = store_cp(fx->signer, fx->dir, w, origin, i,
                          caud_journal_head(j));
        }
    }

    if (caud_journal_close(j, err, sizeof(err)) != 0) {
        rc = -1;
    }

    return rc;
}


static int
fixture(fixture_t *fx, const char *base, const char *name)
{
    rmtree(fx->dir);
    snprintf(fx->dir, sizeof(fx->dir), "%s/%s", base, name);

    if (mkdir(fx->dir, 0700) != 0 || make_journal(fx, 0, NREC) != 0) {
        check(0, name, "setup", strerror(errno));
        return -1;
    }

    return 0;
}


/* runs verify on fx->dir; the report in out (malloc()ed) */
static int
run_verify(fixture_t *fx, const char *vkey, char **out)
{
    int                  rc;
    char                 err[512], *buf;
    FILE                *f;
    size_t               len;
    caud_verify_opts_t   o;

    buf = NULL;
    f = open_memstream(&buf, &len);
    if (f == NULL) {
        return -2;
    }

    memset(&o, 0, sizeof(o));
    o.dir = fx->dir;
    o.origin_prefix = PREFIX;
    o.vkey = vkey ? vkey : fx->vkey;
    o.out = f;

    err[0] = '\0';
    rc = caud_verify(&o, err, sizeof(err));
    if (rc < 0) {
        fprintf(f, "ERROR %s\n", err);
    }

    fclose(f);

    if (out) {
        *out = buf;

    } else {
        free(buf);
    }

    return rc;
}


/* verify fails and its report holds every one of the NULL-ended lines
 * (substrings), and no other finding */
static void
expect(fixture_t *fx, const char *group, const char *name, int nfind, ...)
{
    int          rc, ok, lines;
    char        *out, *p, *nl, detail[2048];
    va_list      ap;
    const char  *want;

    rc = run_verify(fx, NULL, &out);
    ok = (rc == 1);

    va_start(ap, nfind);
    while ((want = va_arg(ap, const char *)) != NULL) {
        if (out == NULL || strstr(out, want) == NULL) {
            ok = 0;
        }
    }
    va_end(ap);

    /* one line per finding: count the "journal " lines */
    lines = 0;
    for (p = out; p && (nl = strchr(p, '\n')) != NULL; p = nl + 1) {
        lines += strncmp(p, "journal local/", 14) == 0;
    }

    if (lines != nfind) {
        ok = 0;
    }

    snprintf(detail, sizeof(detail), "rc %d, %d finding lines:\n%s", rc,
             lines, out ? out : "");
    check(ok, group, name, detail);
    free(out);
}


/* ------------------------------------------------------------------ */
/* tests */

static void
test_clean(fixture_t *fx, const char *base)
{
    int    rc;
    char  *out;

    if (fixture(fx, base, "clean") != 0 || make_journal(fx, 3, 5) != 0) {
        return;
    }

    rc = run_verify(fx, NULL, &out);
    check(rc == 0 && out
          && strstr(out, "verify: 2 journals, 17 records, 4 checkpoints: OK\n")
          && strstr(out, "journal local/") == NULL, "clean",
          "two journals and their checkpoints verify", out);
    free(out);

    /* a torn tail past the last checkpoint: a crash, not tampering */
    {
        int   fd;
        char  file[1024];
        char  zeros[100] = { 0 };

        seg_path(file, sizeof(file), fx->dir, 3, 4);
        fd = open(file, O_WRONLY | O_APPEND);
        check(fd >= 0 && write(fd, zeros, sizeof(zeros)) == sizeof(zeros),
              "clean", "append a zero tail", NULL);
        if (fd >= 0) {
            close(fd);
        }
    }

    rc = run_verify(fx, NULL, &out);
    check(rc == 0, "clean", "a torn tail after the last checkpoint is no "
          "finding", out);
    free(out);
}


/* every bit of file flipped in turn: verify must fail every time */
static int
flip_all(fixture_t *fx, const char *file, char *detail, size_t dsize)
{
    int       fd, undetected, rc;
    char     *out;
    size_t    len, bit;
    uint8_t  *orig, b;

    orig = slurp(file, &len);
    fd = open(file, O_WRONLY);
    if (orig == NULL || fd < 0) {
        free(orig);
        if (fd >= 0) {
            close(fd);
        }
        snprintf(detail, dsize, "cannot open %s", file);
        return -1;
    }

    undetected = 0;

    for (bit = 0; bit < len * 8; bit++) {
        b = orig[bit / 8] ^ (uint8_t) (1u << (bit % 8));
        if (pwrite(fd, &b, 1, bit / 8) != 1) {
            undetected++;
            break;
        }

        rc = run_verify(fx, NULL, &out);
        if (rc != 1 || out == NULL || strstr(out, "journal local/0") == NULL)
        {
            undetected++;
            snprintf(detail, dsize, "bit %zu (byte %zu): rc %d\n%s", bit,
                     bit / 8, rc, out ? out : "");
        }

        free(out);

        if (pwrite(fd, &orig[bit / 8], 1, bit / 8) != 1) {
            undetected++;
            break;
        }
    }

    close(fd);
    free(orig);

    return undetected;
}


static void
test_bitflip(fixture_t *fx, const char *base)
{
    int   n;
    char  file[1024], detail[2048];

    if (fixture(fx, base, "bitflip") != 0) {
        return;
    }

    detail[0] = '\0';
    n = flip_all(fx, seg_path(file, sizeof(file), fx->dir, 0, 4), detail,
                 sizeof(detail));
    check(n == 0, "bitflip", "every bit of a sealed segment", detail);

    detail[0] = '\0';
    n = flip_all(fx, seg_path(file, sizeof(file), fx->dir, 0, 10), detail,
                 sizeof(detail));
    check(n == 0, "bitflip", "every bit of the live segment", detail);

    detail[0] = '\0';
    caud_checkpoint_path(file, sizeof(file), fx->dir, 0, 8);
    n = flip_all(fx, file, detail, sizeof(detail));
    check(n == 0, "bitflip", "every bit of a checkpoint note", detail);

    check(run_verify(fx, NULL, NULL) == 0, "bitflip", "restored", NULL);
}


static void
test_truncate(fixture_t *fx, const char *base)
{
    char      file[1024];
    size_t    len;
    uint8_t  *b;

    /* the live segment holds 10, 11 and 12, frames of one size: cut 12
     * off at its frame */
    if (fixture(fx, base, "truncate") != 0) {
        return;
    }

    seg_path(file, sizeof(file), fx->dir, 0, 10);
    b = slurp(file, &len);
    free(b);
    check(b != NULL && truncate(file, (len - CAUD_SEGMENT_HDR_LEN) / 3 * 2
                                + CAUD_SEGMENT_HDR_LEN) == 0,
          "truncate", "cut the last record", NULL);
    expect(fx, "truncate", "a record below the checkpoint cut off", 1,
           "journal local/0 truncated: last seq 11 < checkpoint 12", NULL);

    /* inside a frame: a torn tail, still below the checkpoint */
    if (fixture(fx, base, "torn") != 0) {
        return;
    }

    seg_path(file, sizeof(file), fx->dir, 0, 10);
    check(b != NULL && truncate(file, len - 10) == 0, "truncate",
          "cut inside the last frame", NULL);
    expect(fx, "truncate", "a torn record below the checkpoint", 1,
           "journal local/0 truncated: last seq 11 < checkpoint 12", NULL);

    /* the whole live segment gone: 9 is the last record */
    check(unlink(file) == 0, "truncate", "remove the live segment", NULL);
    expect(fx, "truncate", "the last segment removed", 1,
           "journal local/0 truncated: last seq 9 < checkpoint 12", NULL);
}


static void
test_signatures(fixture_t *fx, const char *base)
{
    char            key2[600], err[256], origin[CAUD_ORIGIN_MAX];
    uint64_t        i;
    caud_signer_t  *s2;

    if (fixture(fx, base, "resign") != 0) {
        return;
    }

    /* the same name, another key: what an attacker with only a key of
     * their own can do after rewriting history */
    snprintf(key2, sizeof(key2), "%s/other.key", base);
    s2 = caud_signer_load(key2, PREFIX, err, sizeof(err));
    if (s2 == NULL) {
        check(caud_key_generate(key2, err, sizeof(err)) == 0, "resign",
              "second key", err);
        s2 = caud_signer_load(key2, PREFIX, err, sizeof(err));
    }

    check(s2 != NULL, "resign", "load the second key", err);
    if (s2 == NULL) {
        return;
    }

    snprintf(origin, sizeof(origin), "%s/0", PREFIX);
    for (i = 4; i <= NREC; i += 4) {
        check(store_cp(s2, fx->dir, 0, origin, i, fx->heads[i]) == 0,
              "resign", "re-sign", NULL);
    }

    expect(fx, "resign", "checkpoints signed by another key", 3,
           "journal local/0 checkpoint 4: bad signature",
           "journal local/0 checkpoint 8: bad signature",
           "journal local/0 checkpoint 12: bad signature", NULL);

    caud_signer_free(s2);

    /* the right key, a root that is not the record's entry_hash */
    if (fixture(fx, base, "root") != 0) {
        return;
    }

    check(store_cp(fx->signer, fx->dir, 0, origin, 8, fx->heads[7]) == 0,
          "root", "re-sign checkpoint 8 over another root", NULL);
    expect(fx, "root", "an altered root signed with the right key", 1,
           "journal local/0 checkpoint 8: changed", NULL);

    /* the right key, another journal's origin */
    if (fixture(fx, base, "origin") != 0) {
        return;
    }

    snprintf(origin, sizeof(origin), "%s/1", PREFIX);
    check(store_cp(fx->signer, fx->dir, 0, origin, 8, fx->heads[8]) == 0,
          "origin", "sign checkpoint 8 for writer 1", NULL);
    expect(fx, "origin", "a checkpoint of another journal", 1,
           "journal local/0 checkpoint 8: bad signature", NULL);

    /* a checkpoint beyond the journal, validly signed: truncated */
    if (fixture(fx, base, "beyond") != 0) {
        return;
    }

    snprintf(origin, sizeof(origin), "%s/0", PREFIX);
    check(store_cp(fx->signer, fx->dir, 0, origin, 20, fx->heads[12]) == 0,
          "beyond", "sign checkpoint 20", NULL);
    expect(fx, "beyond", "a checkpoint past the end", 1,
           "journal local/0 truncated: last seq 12 < checkpoint 20", NULL);
}


static void
test_segments(fixture_t *fx, const char *base)
{
    char  file[1024];

    if (fixture(fx, base, "segment") != 0) {
        return;
    }

    check(unlink(seg_path(file, sizeof(file), fx->dir, 0, 4)) == 0,
          "segment", "remove segment 4", NULL);
    expect(fx, "segment", "a sealed segment removed", 1,
           "journal local/0 seq 4: deleted", NULL);

    if (fixture(fx, base, "head") != 0) {
        return;
    }

    check(unlink(seg_path(file, sizeof(file), fx->dir, 0, 1)) == 0,
          "head", "remove segment 1", NULL);
    expect(fx, "head", "the first segment removed", 1,
           "journal local/0 seqs 1..3: deleted", NULL);

    /* one damaged journal among good ones is named alone */
    if (fixture(fx, base, "two") != 0 || make_journal(fx, 1, NREC) != 0) {
        return;
    }

    check(unlink(seg_path(file, sizeof(file), fx->dir, 1, 7)) == 0,
          "two", "remove segment 7 of writer 1", NULL);
    expect(fx, "two", "the damaged journal is named", 1,
           "journal local/1 seq 7: deleted", NULL);
}


static void
test_misuse(fixture_t *fx, const char *base)
{
    int    rc;
    char  *out;

    if (fixture(fx, base, "misuse") != 0) {
        return;
    }

    rc = run_verify(fx, "not-a-key", &out);
    check(rc == -1, "misuse", "a bad vkey is an error, not a finding", out);
    free(out);

    rmtree(fx->dir);
    rc = run_verify(fx, NULL, &out);
    check(rc == -1, "misuse", "a missing directory is an error", out);
    free(out);
}


int
main(void)
{
    char        err[256];
    fixture_t   fx;

    memset(&fx, 0, sizeof(fx));

    if (mkdir_tmp(fx.base, sizeof(fx.base), "caud-verify") == NULL) {
        printf("mkdtemp failed\n0 passed, 1 failed\n");
        return 1;
    }

    snprintf(fx.key, sizeof(fx.key), "%s/audit.key", fx.base);
    if (caud_key_generate(fx.key, err, sizeof(err)) != 0
        || (fx.signer = caud_signer_load(fx.key, PREFIX, err, sizeof(err)))
           == NULL
        || caud_signer_vkey(fx.signer, fx.vkey, sizeof(fx.vkey)) != 0)
    {
        printf("key: %s\n0 passed, 1 failed\n", err);
        rmtree(fx.base);
        return 1;
    }

    test_clean(&fx, fx.base);
    test_bitflip(&fx, fx.base);
    test_truncate(&fx, fx.base);
    test_signatures(&fx, fx.base);
    test_segments(&fx, fx.base);
    test_misuse(&fx, fx.base);

    caud_signer_free(fx.signer);
    rmtree(fx.base);

    return unit_report();
}
